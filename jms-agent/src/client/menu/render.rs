//! The menu as text — no I/O: [`render`] turns the state and the
//! terminal size into the lines of one screen (only the visible page is
//! looked at), [`paint`] into the bytes that draw them.
//!
//! Layout (rows top to bottom): a title bar, the column headings, one
//! page of rows, a status or help line, the `Opt>` prompt. Columns
//! shrink, then drop (accounts, node, address), to fit narrow terminals;
//! text is cut by display width (wide CJK characters count two) with `…`.

use std::fmt::Write as _;

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::client::menu::state::{Menu, Screen, Status};
use crate::client::tty::Size;

/// Rows above the list (title, headings), in the list, below (status,
/// prompt) for a terminal of `rows` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub header: usize,
    pub page: usize,
    pub footer: usize,
}

pub fn layout(rows: u16) -> Layout {
    let rows = usize::from(rows);
    let header = if rows >= 6 { 2 } else { 0 };
    let footer = if rows >= 4 { 2 } else { 1 };
    Layout {
        header,
        footer,
        page: rows.saturating_sub(header + footer).max(1),
    }
}

/// One screen: the lines (with colour codes) and where the cursor goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub lines: Vec<String>,
    /// (row, column), 0-based.
    pub cursor: (usize, usize),
}

impl Frame {
    /// The lines without colour codes (for tests and logs).
    pub fn plain(&self) -> Vec<String> {
        self.lines.iter().map(|l| strip_sgr(l)).collect()
    }
}

/// Colour codes (SGR parameters) of each part.
mod sgr {
    pub const TITLE: &str = "1;37;44";
    pub const HEADING: &str = "1;4";
    pub const ID: &str = "33";
    pub const NAME: &str = "1;36";
    pub const NODE: &str = "32";
    pub const DIM: &str = "2";
    pub const SELECTED: &str = "1;7";
    pub const ERROR: &str = "1;31";
    pub const INFO: &str = "1;32";
    pub const PROMPT: &str = "1;36";
}

/// A line being built, colour or not.
struct Line {
    text: String,
    colour: bool,
}

impl Line {
    fn new(colour: bool) -> Line {
        Line {
            text: String::new(),
            colour,
        }
    }
    fn push(&mut self, style: &str, text: &str) {
        if self.colour && !style.is_empty() && !text.is_empty() {
            let _ = write!(self.text, "\x1b[{style}m{text}\x1b[0m");
        } else {
            self.text.push_str(text);
        }
    }
}

/// Draws the menu for a terminal of `size`.
pub fn render(menu: &Menu, size: Size, colour: bool) -> Frame {
    let cols = usize::from(size.cols);
    let rows = usize::from(size.rows);
    let layout = layout(size.rows);
    let (mut body, prompt) = match menu.screen() {
        Screen::Assets => (assets(menu, cols, layout, colour), "Opt> "),
        Screen::Accounts { row, .. } => (accounts(menu, *row, cols, layout, colour), "Account> "),
    };
    let mut footer = Vec::new();
    if layout.footer == 2 {
        footer.push(status_line(menu, cols, colour));
    }
    let (prompt_line, cursor_col) = prompt_line(prompt, menu.input(), cols, colour);
    footer.push(prompt_line);
    let list_rows = rows.saturating_sub(footer.len());
    body.truncate(list_rows);
    body.resize(list_rows, String::new());
    let cursor_row = body.len() + footer.len() - 1;
    body.extend(footer);
    Frame {
        lines: body,
        cursor: (cursor_row, cursor_col),
    }
}

/// The bytes that draw `frame` on a terminal of `size` (each row is
/// addressed and cleared, so nothing of the previous screen survives;
/// `clear` wipes the whole screen first).
pub fn paint(frame: &Frame, size: Size, clear: bool) -> String {
    let mut out =
        String::with_capacity(frame.lines.iter().map(|l| l.len() + 12).sum::<usize>() + 32);
    out.push_str("\x1b[?25l");
    if clear {
        out.push_str("\x1b[H\x1b[2J");
    }
    for (i, line) in frame.lines.iter().enumerate() {
        let _ = write!(out, "\x1b[{};1H\x1b[2K{line}", i + 1);
    }
    if frame.lines.len() < usize::from(size.rows) {
        let _ = write!(out, "\x1b[{};1H\x1b[J", frame.lines.len() + 1);
    }
    let _ = write!(
        out,
        "\x1b[0m\x1b[{};{}H\x1b[?25h",
        frame.cursor.0 + 1,
        frame.cursor.1 + 1
    );
    out
}

fn title(left: &str, right: &str, cols: usize, colour: bool) -> String {
    let mut text = format!(" {left}");
    let room = cols.saturating_sub(text.width());
    if !right.is_empty() && right.width() + 2 <= room {
        text.push_str(&" ".repeat(room - right.width() - 1));
        text.push_str(right);
    }
    let mut line = Line::new(colour);
    line.push(sgr::TITLE, &fit(&text, cols));
    line.text
}

fn assets(menu: &Menu, cols: usize, layout: Layout, colour: bool) -> Vec<String> {
    let catalog = menu.catalog();
    let mut lines = Vec::with_capacity(layout.header + layout.page);
    let searching = if !menu.input().trim().is_empty()
        && !menu.input().trim().bytes().all(|b| b.is_ascii_digit())
    {
        Some(menu.input().trim().trim_start_matches('/'))
    } else {
        None
    };
    let search = match (menu.filter(), searching) {
        ("", None) => String::new(),
        (f, None) => f.to_owned(),
        ("", Some(s)) => s.to_owned(),
        (f, Some(s)) => format!("{f} {s}"),
    };
    let left = format!("jms · {} · {} assets", menu.user, catalog.len());
    let right = if search.is_empty() {
        String::new()
    } else {
        // The search term gets what the title leaves, cut if need be.
        let count = menu.matches().to_string();
        let frame = "search “”:  ".width() + count.width();
        let room = cols.saturating_sub(left.width() + 3 + frame);
        let term = fit(&search, search.width().min(room.max(4)));
        format!("search “{}”: {count} ", term.trim_end())
    };
    let rows = menu.visible();
    let id_width = catalog.len().max(1).to_string().len().max(2);
    let avail = cols.saturating_sub(1 + id_width + 2);
    let desired = rows.iter().fold([4, 7, 4, 8], |mut w, &r| {
        let e = catalog.get(r as usize);
        w[0] = w[0].max(e.name.width());
        w[1] = w[1].max(e.address.width());
        w[2] = w[2].max(e.nodes.width());
        w[3] = w[3].max(accounts_text(e).width());
        w
    });
    let widths = fit_columns(avail, desired);
    if layout.header == 2 {
        lines.push(title(&left, &right, cols, colour));
        let mut heading = Line::new(colour);
        let mut text = format!(" {:>id_width$}", "ID");
        for (label, w) in ["NAME", "ADDRESS", "NODE", "ACCOUNTS"].iter().zip(widths) {
            if w > 0 {
                text.push_str("  ");
                text.push_str(&fit(label, w));
            }
        }
        heading.push(
            sgr::HEADING,
            &fit(text.trim_end(), cols.min(text.trim_end().width())),
        );
        lines.push(heading.text);
    }
    if rows.is_empty() {
        let note = if catalog.is_empty() {
            "  No assets are granted to you.".to_owned()
        } else {
            format!("  No asset matches “{search}”.")
        };
        let mut line = Line::new(colour);
        line.push(sgr::DIM, &fit(&note, cols));
        lines.push(line.text);
        return lines;
    }
    let first = (menu.selected() / menu.page_size()) * menu.page_size();
    for (i, &r) in rows.iter().enumerate() {
        let e = catalog.get(r as usize);
        let selected = first + i == menu.selected();
        let cells = [
            (sgr::NAME, e.name.as_str()),
            ("", e.address.as_str()),
            (sgr::NODE, e.nodes.as_str()),
            (
                if e.accounts.is_empty() { sgr::DIM } else { "" },
                &accounts_text(e),
            ),
        ];
        let mut line = Line::new(colour && !selected);
        line.push("", if selected { ">" } else { " " });
        line.push(sgr::ID, &format!("{:>id_width$}", e.id));
        for ((style, text), w) in cells.iter().zip(widths) {
            if w > 0 {
                line.push("", "  ");
                line.push(style, &fit(text, w));
            }
        }
        if selected && colour {
            let mut highlighted = Line::new(true);
            highlighted.push(sgr::SELECTED, &line.text);
            lines.push(highlighted.text);
        } else {
            lines.push(line.text);
        }
    }
    lines
}

fn accounts(menu: &Menu, row: usize, cols: usize, layout: Layout, colour: bool) -> Vec<String> {
    let entry = menu.catalog().get(row);
    let mut lines = Vec::new();
    let choices = menu.visible_accounts();
    let number_width = entry.accounts.len().to_string().len().max(2);
    let name_width = choices
        .iter()
        .map(|(_, c)| c.name.width())
        .max()
        .unwrap_or(0)
        .clamp(7, 32);
    if layout.header == 2 {
        lines.push(title(
            &format!("{} · {} · choose an account", entry.name, entry.address),
            "",
            cols,
            colour,
        ));
        let text = format!(
            " {:>number_width$}  {}  LOGIN AS",
            "#",
            fit("ACCOUNT", name_width)
        );
        let mut heading = Line::new(colour);
        heading.push(sgr::HEADING, &fit(&text, cols.min(text.width())));
        lines.push(heading.text);
    }
    for (n, choice) in choices {
        let selected = n - 1 == menu.selected();
        let text = format!(
            "{}{:>number_width$}  {}  {}",
            if selected { ">" } else { " " },
            n,
            fit(&choice.name, name_width),
            choice.describe(&menu.user)
        );
        let mut line = Line::new(colour);
        line.push(if selected { sgr::SELECTED } else { "" }, &fit(&text, cols));
        lines.push(line.text);
    }
    lines
}

fn accounts_text(entry: &crate::client::menu::catalog::Entry) -> String {
    if entry.accounts.is_empty() {
        return "(no ssh login)".into();
    }
    let names: Vec<&str> = entry.accounts.iter().map(|c| c.name.as_str()).collect();
    names.join(", ")
}

fn status_line(menu: &Menu, cols: usize, colour: bool) -> String {
    let mut line = Line::new(colour);
    match menu.status() {
        Some(Status::Error(text)) => line.push(sgr::ERROR, &fit(&format!(" {text}"), cols)),
        Some(Status::Info(text)) => line.push(sgr::INFO, &fit(&format!(" {text}"), cols)),
        None => {
            let (page, pages) = menu.page();
            let help = match menu.screen() {
                Screen::Assets => format!(
                    " Page {}/{pages} · number or name: connect · n/p, PgDn/PgUp: page · /text: search · q: quit",
                    page + 1
                ),
                Screen::Accounts { .. } => {
                    format!(" Page {}/{pages} · number or name: connect · Esc: back", page + 1)
                }
            };
            line.push(sgr::DIM, &fit(&help, cols));
        }
    }
    line.text
}

/// The prompt and the input (its tail, when too long); the cursor column.
fn prompt_line(prompt: &str, input: &str, cols: usize, colour: bool) -> (String, usize) {
    let room = cols.saturating_sub(prompt.width() + 1);
    let shown = if input.width() <= room {
        input.to_owned()
    } else {
        let mut tail: Vec<char> = Vec::new();
        let mut width = 1; // the leading '…'
        for c in input.chars().rev() {
            let w = c.width().unwrap_or(0);
            if width + w > room {
                break;
            }
            width += w;
            tail.push(c);
        }
        std::iter::once('…').chain(tail.into_iter().rev()).collect()
    };
    let mut line = Line::new(colour);
    line.push(sgr::PROMPT, &fit(prompt, cols.min(prompt.width())));
    line.push("", &shown);
    let col = (prompt.width() + shown.width()).min(cols.saturating_sub(1));
    (line.text, col)
}

/// Column widths (name, address, node, accounts) within `avail` cells,
/// with two spaces between columns: each capped, the widest shrunk first
/// down to a minimum, then the last columns dropped (width 0). Room left
/// goes back to the shrunk columns, the name first, then to the last
/// column shown.
pub fn fit_columns(avail: usize, desired: [usize; 4]) -> [usize; 4] {
    const MIN: [usize; 4] = [8, 9, 8, 8];
    const CAP: [usize; 4] = [32, 39, 40, 80];
    let mut widths = [0; 4];
    for i in 0..4 {
        widths[i] = desired[i].min(CAP[i]);
    }
    let wanted = widths;
    let mut shown = 4;
    loop {
        let total = widths[..shown].iter().sum::<usize>() + 2 * (shown - 1);
        if total <= avail {
            // Give back what shrinking took, the first columns first;
            // the rest to the last column shown.
            let mut left = avail - total;
            for i in 0..shown {
                let more = (wanted[i] - widths[i]).min(left);
                widths[i] += more;
                left -= more;
            }
            widths[shown - 1] += left;
            break;
        }
        if let Some(i) = (0..shown)
            .filter(|&i| widths[i] > MIN[i])
            .max_by_key(|&i| widths[i])
        {
            widths[i] -= 1;
        } else if shown > 1 {
            shown -= 1;
        } else {
            widths[0] = avail;
            break;
        }
    }
    for w in widths.iter_mut().skip(shown) {
        *w = 0;
    }
    widths
}

/// `text` in exactly `width` display cells: padded, or cut with `…`.
pub fn fit(text: &str, width: usize) -> String {
    let w = text.width();
    if w <= width {
        let mut out = String::with_capacity(text.len() + width - w);
        out.push_str(text);
        out.extend(std::iter::repeat_n(' ', width - w));
        return out;
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let cw = c.width().unwrap_or(0);
        if used + cw > width - 1 {
            break;
        }
        used += cw;
        out.push(c);
    }
    out.push('…');
    out.extend(std::iter::repeat_n(' ', width - 1 - used));
    out
}

/// `line` without SGR colour codes.
pub fn strip_sgr(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::menu::catalog::tests::{asset, many};
    use crate::client::menu::catalog::Catalog;
    use crate::client::menu::keys::Key;

    fn size(cols: u16, rows: u16) -> Size {
        Size { cols, rows }
    }

    fn menu_for(assets: Vec<jms_proto::ListedAsset>, rows: u16) -> Menu {
        let mut menu = Menu::new("alice", Catalog::new(assets));
        menu.set_page_size(layout(rows).page);
        menu
    }

    #[test]
    // How fast: the session benchmark's menu-paint row (`make bench`).
    fn a_page_of_ten_thousand_assets_fits_80x24() {
        let assets = many(10_000);
        let menu = menu_for(assets, 24);
        let frame = render(&menu, size(80, 24), true);
        let bytes = paint(&frame, size(80, 24), true);
        let plain = frame.plain();
        assert_eq!(plain.len(), 24, "one screen: {plain:#?}");
        assert!(
            plain.iter().all(|l| l.width() <= 80),
            "no line wider than 80: {plain:#?}"
        );
        assert!(plain[0].contains("10000 assets"), "{}", plain[0]);
        assert!(plain[2].contains("host-00001") && plain[21].contains("host-00020"));
        assert!(plain[22].contains("Page 1/500"), "{}", plain[22]);
        assert!(plain[23].starts_with("Opt> "));
        assert!(
            bytes.len() < 8_000,
            "a page is a few KB, not the list: {}",
            bytes.len()
        );
        // Each row is addressed and cleared.
        assert!(bytes.contains("\x1b[3;1H\x1b[2K"));
    }

    #[test]
    fn typing_into_ten_thousand_assets_narrows_the_list() {
        let mut menu = menu_for(many(10_000), 24);
        for c in "host-0999".chars() {
            menu.handle(Key::Char(c));
            let _ = paint(&render(&menu, size(80, 24), true), size(80, 24), false);
        }
        assert_eq!(menu.matches(), 10, "host-09990 to host-09999");
    }

    #[test]
    fn the_columns_and_the_selection_show() {
        let menu = menu_for(
            vec![
                asset(
                    "web01",
                    "10.0.0.1",
                    "/Default/prod/web",
                    &["root", "@INPUT"],
                ),
                asset("db01", "10.0.1.1", "/Default/prod/db", &[]),
            ],
            24,
        );
        let plain = render(&menu, size(100, 24), false).plain();
        assert!(
            plain[1].contains("ID  NAME") && plain[1].contains("ACCOUNTS"),
            "{}",
            plain[1]
        );
        assert!(
            plain[2].starts_with("> 1  web01"),
            "the first row is highlighted: {:?}",
            plain[2]
        );
        assert!(plain[2].contains("10.0.0.1") && plain[2].contains("/Default/prod/web"));
        assert!(plain[2].contains("root, @INPUT"));
        assert!(plain[3].contains("(no ssh login)"));
        let coloured = render(&menu, size(100, 24), true);
        assert!(
            coloured.lines[2].contains("\x1b[1;7m"),
            "highlight in reverse video"
        );
        assert!(
            coloured.lines[3].contains("\x1b[1;36mdb01"),
            "names in colour"
        );
    }

    #[test]
    fn narrow_terminals_drop_columns_and_cut_with_an_ellipsis() {
        let menu = menu_for(
            vec![asset(
                "a-really-long-asset-name-for-testing-purposes",
                "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff",
                "/Default/some/deep/node/path",
                &["root"],
            )],
            24,
        );
        for cols in [20u16, 30, 40, 60, 80] {
            let plain = render(&menu, size(cols, 24), false).plain();
            for line in &plain {
                assert!(
                    line.width() <= usize::from(cols),
                    "{cols} cols: {line:?} is too wide"
                );
            }
            assert!(
                plain[2].contains('…'),
                "{cols} cols: cut with an ellipsis: {:?}",
                plain[2]
            );
            assert!(
                plain[2].contains("a-really"),
                "{cols} cols: the name stays: {:?}",
                plain[2]
            );
        }
        let plain = render(&menu, size(30, 24), false).plain();
        assert!(
            !plain[2].contains("/Default"),
            "30 columns have no room for nodes: {:?}",
            plain[2]
        );
    }

    #[test]
    fn wide_characters_are_cut_by_display_width() {
        assert_eq!(fit("生产服务器", 5), "生产…");
        assert_eq!(fit("生产服务器", 4), "生… ");
        assert_eq!(fit("web", 5), "web  ");
        assert_eq!(fit("web", 0), "");
        assert_eq!(fit("abcdef", 4), "abc…");
    }

    #[test]
    fn column_fitting_shrinks_then_drops() {
        assert_eq!(fit_columns(80, [10, 10, 10, 10]), [10, 10, 10, 44]);
        let w = fit_columns(40, [30, 30, 30, 30]);
        assert!(
            w.iter().sum::<usize>() + 2 * (w.iter().filter(|&&x| x > 0).count() - 1) <= 40,
            "{w:?}"
        );
        assert_eq!(fit_columns(10, [30, 30, 30, 30]), [10, 0, 0, 0]);
        assert_eq!(fit_columns(0, [5, 5, 5, 5]), [0, 0, 0, 0]);
    }

    #[test]
    fn tiny_terminals_still_show_the_prompt() {
        let menu = menu_for(many(50), 3);
        let frame = render(&menu, size(10, 3), false);
        assert_eq!(frame.lines.len(), 3);
        assert!(frame.plain()[2].starts_with("Opt>"));
        assert_eq!(frame.cursor.0, 2);
        let frame = render(&menu_for(many(5), 1), size(10, 1), false);
        assert_eq!(frame.plain(), ["Opt> "]);
    }

    #[test]
    fn the_prompt_shows_the_tail_of_long_input_and_the_cursor_follows() {
        let mut menu = menu_for(many(5), 24);
        for c in "x".repeat(100).chars() {
            menu.handle(Key::Char(c));
        }
        let frame = render(&menu, size(40, 24), false);
        let prompt = &frame.plain()[23];
        assert!(
            prompt.starts_with("Opt> …x") && prompt.width() < 40,
            "{prompt:?}"
        );
        assert_eq!(frame.cursor, (23, prompt.width()));
        let title = &render(&menu, size(60, 24), false).plain()[0];
        assert!(
            title.contains("search “xxx") && title.contains("…”: 0"),
            "{title:?}"
        );
    }

    #[test]
    fn empty_lists_say_why() {
        let plain = render(&menu_for(Vec::new(), 24), size(80, 24), false).plain();
        assert!(plain[2].contains("No assets are granted to you."));
        let mut menu = menu_for(many(5), 24);
        for c in "zzz".chars() {
            menu.handle(Key::Char(c));
        }
        let plain = render(&menu, size(80, 24), false).plain();
        assert!(plain[2].contains("No asset matches “zzz”."), "{plain:#?}");
    }

    #[test]
    fn the_account_choice_lists_virtual_accounts_with_what_they_mean() {
        let mut menu = menu_for(
            vec![asset(
                "web01",
                "10.0.0.1",
                "/D",
                &["root", "@INPUT", "@USER", "@ANON"],
            )],
            24,
        );
        for c in "web01\r".chars() {
            menu.handle(if c == '\r' { Key::Enter } else { Key::Char(c) });
        }
        let plain = render(&menu, size(80, 24), false).plain();
        assert!(
            plain[0].contains("web01 · 10.0.0.1 · choose an account"),
            "{}",
            plain[0]
        );
        assert!(plain[2].starts_with("> 1  root"), "{:?}", plain[2]);
        assert!(plain[3].contains("@INPUT") && plain[3].contains("you type username and password"));
        assert!(plain[4].contains("@USER") && plain[4].contains("alice"));
        assert!(plain[5].contains("@ANON"));
        assert!(plain[23].starts_with("Account> "));
    }

    #[test]
    fn status_lines_replace_the_help() {
        let mut menu = menu_for(many(5), 24);
        menu.set_status(Status::Error("no such asset: x".into()));
        let frame = render(&menu, size(80, 24), true);
        assert!(frame.lines[22].contains("\x1b[1;31m no such asset: x"));
    }
}
