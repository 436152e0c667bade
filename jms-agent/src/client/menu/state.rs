//! What the menu shows and how keys change it — no I/O.
//!
//! The asset list, an input line (`Opt>`), and a committed search:
//! - typing filters live (substring of name, address or node path; digits
//!   alone are an asset number: the selection jumps to it; `/text`
//!   searches text even when it is digits);
//! - Enter: a number or an exact name (`name` or `account@name`) picks
//!   that asset; a search with one match picks it; a search with several
//!   is committed (kept while she searches further, Esc clears it); an
//!   empty line picks the highlighted row; `q` quits, `n`/`p` page, `r`
//!   reloads the list;
//! - ↑/↓ move the highlight, PgUp/PgDn (Ctrl-B/Ctrl-F) page, Home/End;
//! - an asset with several accounts opens the account choice (number or
//!   name, Esc goes back).

use crate::client::menu::catalog::{Catalog, Choice, Query};
use crate::client::menu::keys::Key;

/// What the caller does after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Draw the new state.
    Draw,
    /// Clear the screen and draw (Ctrl-L).
    Repaint,
    /// Leave the menu.
    Quit,
    /// Fetch the asset list again.
    Reload,
    /// Open a session with this command line (`account@asset`).
    Connect(String),
}

/// A line under the list, until the next key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Info(String),
    Error(String),
}

/// Which list is on screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    Assets,
    /// Choosing an account of the asset at catalog index `row`.
    Accounts {
        row: usize,
        selected: usize,
    },
}

/// The menu's state.
#[derive(Debug, Clone)]
pub struct Menu {
    /// The engineer's bastion username (for the title and `@USER`).
    pub user: String,
    catalog: Catalog,
    /// The committed search ("" for none).
    filter: String,
    /// The line being typed.
    input: String,
    /// Rows matching the committed search (catalog indices, in order).
    base: Vec<u32>,
    /// Rows shown: `base` narrowed by the live input.
    view: Vec<u32>,
    /// The highlighted position in `view`.
    selected: usize,
    /// The highlight in `base` when the input started, restored when the
    /// input is emptied again.
    base_selected: usize,
    page_size: usize,
    screen: Screen,
    status: Option<Status>,
}

/// How the input line reads on the asset screen.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Input<'a> {
    Empty,
    Number(usize),
    Search(&'a str),
}

fn read_input(input: &str) -> Input<'_> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        Input::Empty
    } else if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        Input::Number(trimmed.parse().unwrap_or(usize::MAX))
    } else if let Some(text) = trimmed.strip_prefix('/') {
        Input::Search(text)
    } else {
        Input::Search(trimmed)
    }
}

impl Menu {
    pub fn new(user: impl Into<String>, catalog: Catalog) -> Menu {
        let base = catalog.all();
        Menu {
            user: user.into(),
            view: base.clone(),
            base,
            catalog,
            filter: String::new(),
            input: String::new(),
            selected: 0,
            base_selected: 0,
            page_size: 10,
            screen: Screen::Assets,
            status: None,
        }
    }

    // --- what the renderer reads ---

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }
    pub fn filter(&self) -> &str {
        &self.filter
    }
    pub fn input(&self) -> &str {
        &self.input
    }
    pub fn screen(&self) -> &Screen {
        &self.screen
    }
    pub fn status(&self) -> Option<&Status> {
        self.status.as_ref()
    }
    /// How many rows match (the committed search and the live input).
    pub fn matches(&self) -> usize {
        self.view.len()
    }
    pub fn page_size(&self) -> usize {
        self.page_size
    }
    /// The highlighted position in the shown list.
    pub fn selected(&self) -> usize {
        match self.screen {
            Screen::Assets => self.selected,
            Screen::Accounts { selected, .. } => selected,
        }
    }
    /// (page number from 0, page count) of the shown list.
    pub fn page(&self) -> (usize, usize) {
        let len = match &self.screen {
            Screen::Assets => self.view.len(),
            Screen::Accounts { row, .. } => self.catalog.get(*row).accounts.len(),
        };
        let pages = len.div_ceil(self.page_size).max(1);
        (self.selected() / self.page_size, pages)
    }
    /// The catalog indices of the asset rows on the current page.
    pub fn visible(&self) -> &[u32] {
        let start = (self.selected / self.page_size) * self.page_size;
        let end = (start + self.page_size).min(self.view.len());
        &self.view[start.min(end)..end]
    }
    /// The accounts on the current page of the account choice, with their
    /// numbers (1-based).
    pub fn visible_accounts(&self) -> Vec<(usize, &Choice)> {
        let Screen::Accounts { row, selected } = self.screen else {
            return Vec::new();
        };
        let start = (selected / self.page_size) * self.page_size;
        self.catalog
            .get(row)
            .accounts
            .iter()
            .enumerate()
            .skip(start)
            .take(self.page_size)
            .map(|(i, c)| (i + 1, c))
            .collect()
    }

    // --- changes from outside ---

    /// Rows per page (from the terminal's height).
    pub fn set_page_size(&mut self, rows: usize) {
        self.page_size = rows.max(1);
    }

    /// Shows a line under the list until the next key.
    pub fn set_status(&mut self, status: Status) {
        self.status = Some(status);
    }

    /// A fresh list (after a session, or `r`): the search is kept, the
    /// highlight stays on the same asset when it is still there.
    pub fn replace_catalog(&mut self, catalog: Catalog) {
        let current = self
            .highlighted()
            .map(|row| self.catalog.get(row).name.clone());
        self.catalog = catalog;
        self.screen = Screen::Assets;
        self.input.clear();
        self.base = self
            .catalog
            .search(&self.catalog.all(), &Query::new(&self.filter));
        self.view = self.base.clone();
        self.selected = current
            .and_then(|name| self.catalog.by_name(&name))
            .and_then(|row| self.view.binary_search(&(row as u32)).ok())
            .unwrap_or(0);
        self.base_selected = self.selected;
    }

    /// The catalog index of the highlighted asset.
    pub fn highlighted(&self) -> Option<usize> {
        self.view.get(self.selected).map(|&row| row as usize)
    }

    // --- keys ---

    /// Applies one key.
    pub fn handle(&mut self, key: Key) -> Effect {
        self.status = None;
        if key == Key::Redraw {
            return Effect::Repaint;
        }
        match self.screen.clone() {
            Screen::Assets => self.on_assets(key),
            Screen::Accounts { row, selected } => self.on_accounts(key, row, selected),
        }
    }

    fn on_assets(&mut self, key: Key) -> Effect {
        match key {
            Key::Char(c) => {
                let mut input = self.input.clone();
                input.push(c);
                self.set_input(input);
            }
            Key::Backspace => {
                let mut input = self.input.clone();
                input.pop();
                self.set_input(input);
            }
            Key::DeleteWord => {
                let kept = self.input.trim_end();
                let cut = kept.rfind(char::is_whitespace).map_or(0, |i| i + 1);
                let input = kept[..cut].to_owned();
                self.set_input(input);
            }
            Key::ClearLine => self.set_input(String::new()),
            Key::Esc => self.clear_one(),
            Key::Interrupt => {
                if self.input.is_empty() && self.filter.is_empty() {
                    return Effect::Quit;
                }
                self.clear_one();
            }
            Key::EndOfInput if self.input.is_empty() => return Effect::Quit,
            Key::EndOfInput => {}
            Key::Up => self.selected = self.selected.saturating_sub(1),
            Key::Down => self.selected = (self.selected + 1).min(self.view.len().saturating_sub(1)),
            Key::PageUp => {
                self.selected = paged(self.selected, self.page_size, self.view.len(), false)
            }
            Key::PageDown => {
                self.selected = paged(self.selected, self.page_size, self.view.len(), true)
            }
            Key::Home => self.selected = 0,
            Key::End => self.selected = self.view.len().saturating_sub(1),
            Key::Enter => return self.enter_on_assets(),
            Key::Redraw => return Effect::Repaint,
        }
        Effect::Draw
    }

    fn enter_on_assets(&mut self) -> Effect {
        let input = self.input.trim().to_owned();
        match (input.as_str(), read_input(&input)) {
            ("q", _) => Effect::Quit,
            ("n" | "p", _) => {
                self.set_input(String::new());
                let len = self.view.len();
                self.selected = paged(self.selected, self.page_size, len, input == "n");
                Effect::Draw
            }
            ("r", _) => {
                self.set_input(String::new());
                Effect::Reload
            }
            (_, Input::Empty) => match self.highlighted() {
                Some(row) => self.pick(row, None),
                None => Effect::Draw,
            },
            (_, Input::Number(id)) => match self.catalog.by_id(id) {
                Some(row) => {
                    self.set_input(String::new());
                    self.pick(row, None)
                }
                None => {
                    self.status = Some(Status::Error(format!(
                        "no asset number {input} (1–{})",
                        self.catalog.len()
                    )));
                    Effect::Draw
                }
            },
            (_, Input::Search(text)) => {
                let text = text.to_owned();
                let exact = if input.starts_with('/') {
                    None
                } else if let Some(row) = self.catalog.by_name(&text) {
                    Some((row, None))
                } else {
                    text.rsplit_once('@').and_then(|(account, name)| {
                        self.catalog
                            .by_name(name)
                            .map(|row| (row, Some(account.to_owned())))
                    })
                };
                if let Some((row, account)) = exact {
                    self.set_input(String::new());
                    return self.pick(row, account.as_deref());
                }
                match self.view.len() {
                    0 => {
                        self.status = Some(Status::Error(format!("no asset matches “{text}”")));
                        Effect::Draw
                    }
                    1 if !input.starts_with('/') => {
                        let row = self.view[0] as usize;
                        self.set_input(String::new());
                        self.pick(row, None)
                    }
                    n => {
                        self.filter = format!("{} {text}", self.filter).trim().to_owned();
                        self.base = std::mem::take(&mut self.view);
                        self.view = self.base.clone();
                        self.input.clear();
                        self.selected = 0;
                        self.base_selected = 0;
                        self.status = Some(Status::Info(format!(
                            "{n} assets match “{}” — Esc clears the search",
                            self.filter
                        )));
                        Effect::Draw
                    }
                }
            }
        }
    }

    /// Esc: clears the input, or else the committed search.
    fn clear_one(&mut self) {
        if !self.input.is_empty() {
            self.set_input(String::new());
        } else if !self.filter.is_empty() {
            let current = self.highlighted();
            self.filter.clear();
            self.base = self.catalog.all();
            self.view = self.base.clone();
            self.selected = current.unwrap_or(0);
            self.base_selected = self.selected;
        }
    }

    /// Replaces the input line and recomputes the shown rows (narrowing
    /// the current ones when the input only grew).
    fn set_input(&mut self, input: String) {
        let old = std::mem::replace(&mut self.input, input);
        if old.is_empty() && !self.input.is_empty() {
            self.base_selected = self.selected;
        }
        match read_input(&self.input) {
            Input::Empty | Input::Number(_) => {
                if self.view.len() != self.base.len() {
                    self.view = self.base.clone();
                }
                self.selected = match read_input(&self.input) {
                    Input::Number(id) => self
                        .catalog
                        .by_id(id)
                        .and_then(|row| self.view.binary_search(&(row as u32)).ok())
                        .unwrap_or(self.base_selected),
                    _ => self.base_selected,
                };
            }
            Input::Search(text) => {
                let query = Query::new(text);
                let narrowing = matches!(read_input(&old), Input::Search(_))
                    && self.input.starts_with(old.as_str());
                self.view = if narrowing {
                    self.catalog.search(&self.view, &query)
                } else {
                    self.catalog.search(&self.base, &query)
                };
                self.selected = 0;
            }
        }
        self.selected = self.selected.min(self.view.len().saturating_sub(1));
    }

    /// She picked the asset at catalog index `row` (with an account, when
    /// she named one).
    fn pick(&mut self, row: usize, account: Option<&str>) -> Effect {
        let entry = self.catalog.get(row);
        if let Some(account) = account {
            if entry.accounts.iter().any(|c| c.name == account) {
                return Effect::Connect(format!("{account}@{}", entry.name));
            }
            self.status = Some(Status::Error(format!(
                "{}: no account “{account}” you may log in with",
                entry.name
            )));
            return Effect::Draw;
        }
        match entry.accounts.as_slice() {
            [] => {
                self.status = Some(Status::Error(format!(
                    "{}: no account you may log in with over ssh",
                    entry.name
                )));
                Effect::Draw
            }
            [only] => Effect::Connect(format!("{}@{}", only.name, entry.name)),
            _ => {
                self.screen = Screen::Accounts { row, selected: 0 };
                self.input.clear();
                Effect::Draw
            }
        }
    }

    fn on_accounts(&mut self, key: Key, row: usize, selected: usize) -> Effect {
        let count = self.catalog.get(row).accounts.len();
        let last = count.saturating_sub(1);
        let moved = match key {
            Key::Up => Some(selected.saturating_sub(1)),
            Key::Down => Some((selected + 1).min(last)),
            Key::PageUp => Some(paged(selected, self.page_size, count, false)),
            Key::PageDown => Some(paged(selected, self.page_size, count, true)),
            Key::Home => Some(0),
            Key::End => Some(last),
            _ => None,
        };
        if let Some(selected) = moved {
            self.screen = Screen::Accounts { row, selected };
            return Effect::Draw;
        }
        match key {
            Key::Char(c) => self.input.push(c),
            Key::Backspace => {
                self.input.pop();
            }
            Key::ClearLine | Key::DeleteWord => self.input.clear(),
            Key::Esc | Key::Interrupt | Key::EndOfInput => self.back_to_assets(),
            Key::Redraw => return Effect::Repaint,
            Key::Enter => return self.enter_on_accounts(row, selected),
            _ => {}
        }
        Effect::Draw
    }

    fn enter_on_accounts(&mut self, row: usize, selected: usize) -> Effect {
        let input = self.input.trim().to_owned();
        if input == "q" {
            self.back_to_assets();
            return Effect::Draw;
        }
        let entry = self.catalog.get(row);
        let chosen = if input.is_empty() {
            entry.accounts.get(selected)
        } else if let Ok(n) = input.parse::<usize>() {
            n.checked_sub(1).and_then(|i| entry.accounts.get(i))
        } else {
            entry.accounts.iter().find(|c| c.name == input).or_else(|| {
                entry
                    .accounts
                    .iter()
                    .find(|c| c.name.eq_ignore_ascii_case(&input))
            })
        };
        match chosen {
            Some(choice) => {
                let line = format!("{}@{}", choice.name, entry.name);
                self.back_to_assets();
                Effect::Connect(line)
            }
            None => {
                self.status = Some(Status::Error(format!(
                    "{}: no account “{input}”; pick 1–{} or a name",
                    entry.name,
                    entry.accounts.len()
                )));
                self.input.clear();
                Effect::Draw
            }
        }
    }

    fn back_to_assets(&mut self) {
        self.screen = Screen::Assets;
        self.input.clear();
    }
}

/// The highlight after PgDn (`forward`) or PgUp: the first row of the
/// next or previous page.
fn paged(selected: usize, page_size: usize, len: usize, forward: bool) -> usize {
    if len == 0 {
        return 0;
    }
    let page = selected / page_size;
    let page = if forward {
        (page + 1).min((len - 1) / page_size)
    } else {
        page.saturating_sub(1)
    };
    page * page_size
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::menu::catalog::tests::{asset, many};

    fn typed(menu: &mut Menu, text: &str) -> Effect {
        let mut effect = Effect::Draw;
        for c in text.chars() {
            effect = menu.handle(match c {
                '\r' => Key::Enter,
                c => Key::Char(c),
            });
        }
        effect
    }

    fn small() -> Menu {
        Menu::new(
            "alice",
            Catalog::new(vec![
                asset("db01", "10.0.1.1", "/Default/prod/db", &["postgres"]),
                asset(
                    "web01",
                    "10.0.0.1",
                    "/Default/prod/web",
                    &["root", "deploy", "@INPUT"],
                ),
                asset("web02", "10.0.0.2", "/Default/prod/web", &["root"]),
                asset("lonely", "10.9.9.9", "/Default/test", &[]),
            ]),
        )
    }

    fn shown(menu: &Menu) -> Vec<String> {
        menu.visible()
            .iter()
            .map(|&r| menu.catalog().get(r as usize).name.clone())
            .collect()
    }

    #[test]
    fn typing_filters_live_and_backspace_restores() {
        let mut menu = small();
        typed(&mut menu, "web");
        assert_eq!(shown(&menu), ["web01", "web02"]);
        typed(&mut menu, "02");
        assert_eq!(shown(&menu), ["web02"]);
        for _ in 0..5 {
            menu.handle(Key::Backspace);
        }
        assert_eq!(shown(&menu).len(), 4);
    }

    #[test]
    fn an_exact_name_or_a_single_match_connects() {
        let mut menu = small();
        assert_eq!(
            typed(&mut menu, "web02\r"),
            Effect::Connect("root@web02".into())
        );
        let mut menu = small();
        assert_eq!(
            typed(&mut menu, "10.0.1.\r"),
            Effect::Connect("postgres@db01".into())
        );
        let mut menu = small();
        assert_eq!(
            typed(&mut menu, "deploy@web01\r"),
            Effect::Connect("deploy@web01".into())
        );
        let mut menu = small();
        assert_eq!(
            typed(&mut menu, "@INPUT@web01\r"),
            Effect::Connect("@INPUT@web01".into())
        );
    }

    #[test]
    fn a_number_picks_by_stable_id_even_inside_a_search() {
        let mut menu = small();
        assert_eq!(
            typed(&mut menu, "3\r"),
            Effect::Connect("root@web02".into())
        );
        let mut menu = small();
        typed(&mut menu, "web\r"); // committed: web01, web02
        assert_eq!(menu.filter(), "web");
        assert_eq!(
            typed(&mut menu, "1\r"),
            Effect::Connect("postgres@db01".into())
        );
        let mut menu = small();
        assert_eq!(typed(&mut menu, "9\r"), Effect::Draw);
        assert!(matches!(menu.status(), Some(Status::Error(e)) if e.contains("no asset number 9")));
    }

    #[test]
    fn digits_jump_to_the_asset_without_filtering() {
        let mut menu = Menu::new("alice", Catalog::new(many(100)));
        menu.set_page_size(10);
        typed(&mut menu, "57");
        assert_eq!(menu.matches(), 100);
        assert_eq!(menu.highlighted(), Some(56));
        assert_eq!(menu.page(), (5, 10));
        menu.handle(Key::ClearLine);
        assert_eq!(menu.highlighted(), Some(0), "the highlight comes back");
    }

    #[test]
    fn a_slash_searches_digits_as_text() {
        let mut menu = Menu::new("alice", Catalog::new(many(300)));
        typed(&mut menu, "/0025");
        assert_eq!(
            shown(&menu),
            [
                "host-00025",
                "host-00250",
                "host-00251",
                "host-00252",
                "host-00253",
                "host-00254",
                "host-00255",
                "host-00256",
                "host-00257",
                "host-00258"
            ]
        );
        assert_eq!(menu.matches(), 11);
    }

    #[test]
    fn several_accounts_open_the_choice_by_number_or_name() {
        let mut menu = small();
        assert_eq!(typed(&mut menu, "web01\r"), Effect::Draw);
        assert!(matches!(menu.screen(), Screen::Accounts { .. }));
        assert_eq!(
            typed(&mut menu, "2\r"),
            Effect::Connect("deploy@web01".into())
        );
        assert_eq!(
            menu.screen(),
            &Screen::Assets,
            "back to the list after the pick"
        );
        typed(&mut menu, "web01\r");
        assert_eq!(
            typed(&mut menu, "@input\r"),
            Effect::Connect("@INPUT@web01".into())
        );
        typed(&mut menu, "web01\r");
        menu.handle(Key::Down);
        assert_eq!(
            menu.handle(Key::Enter),
            Effect::Connect("deploy@web01".into())
        );
        typed(&mut menu, "web01\r");
        assert_eq!(typed(&mut menu, "7\r"), Effect::Draw);
        assert!(matches!(menu.status(), Some(Status::Error(_))));
        menu.handle(Key::Esc);
        assert_eq!(menu.screen(), &Screen::Assets);
    }

    #[test]
    fn an_asset_without_ssh_accounts_says_so() {
        let mut menu = small();
        assert_eq!(typed(&mut menu, "lonely\r"), Effect::Draw);
        assert!(matches!(menu.status(), Some(Status::Error(e)) if e.contains("no account")));
        let mut menu = small();
        assert_eq!(typed(&mut menu, "nobody@web02\r"), Effect::Draw);
        assert!(matches!(menu.status(), Some(Status::Error(e)) if e.contains("nobody")));
    }

    #[test]
    fn q_quits_and_ctrl_c_clears_before_quitting() {
        let mut menu = small();
        assert_eq!(typed(&mut menu, "q\r"), Effect::Quit);
        let mut menu = small();
        typed(&mut menu, "web\rx");
        assert_eq!(
            menu.handle(Key::Interrupt),
            Effect::Draw,
            "clears the input"
        );
        assert_eq!(
            menu.handle(Key::Interrupt),
            Effect::Draw,
            "clears the search"
        );
        assert_eq!(menu.filter(), "");
        assert_eq!(menu.handle(Key::Interrupt), Effect::Quit);
        let mut menu = small();
        assert_eq!(menu.handle(Key::EndOfInput), Effect::Quit);
    }

    #[test]
    fn paging_by_keys_and_by_n_p() {
        let mut menu = Menu::new("alice", Catalog::new(many(3_000)));
        menu.set_page_size(20);
        assert_eq!(menu.page(), (0, 150));
        menu.handle(Key::PageDown);
        assert_eq!(menu.page().0, 1);
        assert_eq!(menu.visible().len(), 20);
        assert_eq!(menu.catalog().get(menu.visible()[0] as usize).id, 21);
        typed(&mut menu, "n\r");
        assert_eq!(menu.page().0, 2);
        typed(&mut menu, "p\rp\rp\r");
        assert_eq!(menu.page().0, 0);
        menu.handle(Key::End);
        assert_eq!(menu.page(), (149, 150));
        menu.handle(Key::PageDown);
        assert_eq!(menu.page().0, 149, "no page past the last");
        assert_eq!(menu.visible().len(), 20);
    }

    #[test]
    fn a_committed_search_pages_and_narrows_further() {
        let mut menu = Menu::new("alice", Catalog::new(many(3_000)));
        menu.set_page_size(10);
        typed(&mut menu, "dc3\r");
        let matching = menu.matches();
        assert!(
            matching > 400 && matching < 450,
            "about a seventh: {matching}"
        );
        typed(&mut menu, "n\r");
        assert_eq!(menu.page().0, 1);
        assert_eq!(menu.matches(), matching, "n pages within the search");
        typed(&mut menu, "host-000");
        assert!(shown(&menu).iter().all(|n| n.starts_with("host-000")));
        menu.handle(Key::Esc);
        menu.handle(Key::Esc);
        assert_eq!(menu.matches(), 3_000);
    }

    #[test]
    fn a_reload_keeps_the_search_and_the_highlight() {
        let mut menu = Menu::new("alice", Catalog::new(many(50)));
        typed(&mut menu, "host-0004\r");
        menu.handle(Key::Down);
        let before = menu.catalog().get(menu.highlighted().unwrap()).name.clone();
        menu.replace_catalog(Catalog::new(many(60)));
        assert_eq!(menu.filter(), "host-0004");
        assert_eq!(menu.catalog().get(menu.highlighted().unwrap()).name, before);
    }

    #[test]
    fn an_empty_list_quits_and_picks_nothing() {
        let mut menu = Menu::new("alice", Catalog::new(Vec::new()));
        assert_eq!(menu.handle(Key::Enter), Effect::Draw);
        assert_eq!(menu.page(), (0, 1));
        assert!(menu.visible().is_empty());
        assert_eq!(typed(&mut menu, "q\r"), Effect::Quit);
    }
}
