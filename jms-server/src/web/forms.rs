//! The console's one set of form and table helpers: reading a posted form
//! (repeated keys for multi-selects, one-per-line lists), the inputs every
//! page uses, the data table, the search box and the confirm-and-delete
//! button. Pages compose these; none writes its own skeleton.

use maud::{html, Markup};

use super::WebError;

/// A posted form: every `name=value` pair in order (a multi-select sends
/// its name once per chosen value).
#[derive(Debug, Default, Clone)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, trimmed ("" when absent).
    pub fn text(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    }

    /// The value of `name`, or `None` when absent or blank.
    pub fn opt(&self, name: &str) -> Option<String> {
        Some(self.text(name)).filter(|v| !v.is_empty())
    }

    /// Whether the checkbox `name` is ticked.
    pub fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|(k, v)| k == name && !v.is_empty())
    }

    /// Every value of `name`, each split on new lines, blank ones dropped
    /// (multi-selects and one-per-line text areas alike).
    pub fn list(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.lines())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// A time field as RFC 3339 (`null` when blank): what the policy
    /// model reads. Accepts what [`super::layout::parse_time`] does.
    pub fn time(&self, name: &str) -> Result<serde_json::Value, WebError> {
        match self.opt(name) {
            None => Ok(serde_json::Value::Null),
            Some(text) => super::layout::parse_time(&text)
                .map(|t| {
                    serde_json::Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                })
                .map_err(|e| WebError::BadRequest(format!("{name}: {e}"))),
        }
    }
}

/// A labelled text input.
pub fn text(label: &str, name: &str, value: &str) -> Markup {
    html! { label { (label) input type="text" name=(name) id=(field_id(name)) value=(value); } }
}

/// A labelled text input with a hint under it.
pub fn text_hint(label: &str, name: &str, value: &str, hint: &str) -> Markup {
    html! {
        label { (label) input type="text" name=(name) id=(field_id(name)) value=(value) placeholder=(hint); }
    }
}

/// A labelled password input (never pre-filled: secrets are write-only).
pub fn secret(label: &str, name: &str, hint: &str) -> Markup {
    html! {
        label { (label) input type="password" name=(name) id=(field_id(name))
            autocomplete="new-password" placeholder=(hint); }
    }
}

/// A labelled text area, one item per line.
pub fn lines(label: &str, name: &str, values: &[String]) -> Markup {
    html! {
        label { (label) textarea name=(name) id=(field_id(name)) rows="3" { (values.join("\n")) } }
    }
}

/// A checkbox (sends `name=on` when ticked).
pub fn check(label: &str, name: &str, on: bool) -> Markup {
    html! { label.check { input type="checkbox" name=(name) id=(field_id(name)) checked[on]; " " (label) } }
}

/// A single choice.
pub fn choice(label: &str, name: &str, options: &[&str], current: &str) -> Markup {
    html! {
        label { (label) select name=(name) id=(field_id(name)) {
            @for option in options {
                option value=(option) selected[*option == current] { (option) }
            }
        } }
    }
}

/// Past this many options, [`pick`] is a text area (one name per line):
/// a page never carries a select of every user of a large policy.
pub const PICK_MAX: usize = 500;

/// A multiple choice among `options` (those in `chosen` selected);
/// chosen values no longer among the options stay listed. Past
/// [`PICK_MAX`] options, names typed one per line (read alike).
pub fn pick(label: &str, name: &str, options: &[String], chosen: &[String]) -> Markup {
    if options.len() > PICK_MAX {
        return lines(&format!("{label} (one per line)"), name, chosen);
    }
    let mut all: Vec<&String> = options.iter().collect();
    all.extend(chosen.iter().filter(|c| !options.contains(c)));
    html! {
        label { (label) select multiple name=(name) id=(field_id(name)) size=(all.len().clamp(2, 6)) {
            @for option in all {
                option value=(option) selected[chosen.contains(option)] { (option) }
            }
        } }
    }
}

/// Checkboxes, one per option, all sending `name`.
pub fn ticks(label: &str, name: &str, options: &[&str], chosen: &[String]) -> Markup {
    html! {
        fieldset.ticks {
            legend { (label) }
            @for option in options {
                label.check { input type="checkbox" name=(name) value=(option)
                    id=(field_id(&format!("{name}-{option}"))) checked[chosen.iter().any(|c| c == option)]; " " (option) }
            }
        }
    }
}

/// The element id of a field: `f-` and its name (`mail.smtp_host` →
/// `f-mail-smtp_host`), for tests and labels.
pub fn field_id(name: &str) -> String {
    format!(
        "f-{}",
        name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "-")
    )
}

/// A form that writes: posts to `action`, its fields, a submit button.
pub fn form(id: &str, action: &str, fields: Markup, submit: &str) -> Markup {
    html! {
        form.edit method="post" action=(action) id=(id) {
            (fields)
            div.actions { button type="submit" { (submit) } }
        }
    }
}

/// A delete button behind a confirmation box, with what it will do.
pub fn delete(action: &str, what: &str) -> Markup {
    html! {
        form.delete method="post" action=(action) {
            label.check { input type="checkbox" name="confirm" value="yes" required; " " (what) }
            " " button.danger type="submit" { "Delete" }
        }
    }
}

/// Refuses a delete whose confirmation box was not ticked.
pub fn confirmed(fields: &Fields) -> Result<(), WebError> {
    if fields.text("confirm") == "yes" {
        Ok(())
    } else {
        Err(WebError::BadRequest(
            "tick the box to confirm the deletion".to_string(),
        ))
    }
}

/// A search box over a list (GET, `q`).
pub fn search(action: &str, q: &str) -> Markup {
    html! {
        form.filters method="get" action=(action) {
            label { "Search" input type="search" name="q" id="q" value=(q); }
            button type="submit" { "Search" }
        }
    }
}

/// A data table: `id`, its headings and its rows.
pub fn table(id: &str, headings: &[&str], rows: Vec<Markup>) -> Markup {
    html! {
        table.rows id=(id) {
            thead { tr { @for h in headings { th { (h) } } } }
            tbody { @for row in rows { (row) } }
        }
    }
}

/// A notice above a page's content (what the last write did).
pub fn notice(text: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = text {
            p.notice #notice role="status" { (text) }
        }
    }
}

/// A link to an entity page: `/web/{kind}/{escaped name}`.
pub fn link(kind: &str, name: &str) -> Markup {
    html! { a href=(format!("/web/{kind}/{}", super::layout::url_escape(name))) { (super::layout::shown(name)) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        Fields(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn a_long_pick_is_typed_one_per_line() {
        let few = vec!["alice".to_string(), "bob".to_string()];
        let page = pick("Users", "users", &few, &few[..1]).into_string();
        assert!(page.contains("<select multiple"), "{page}");
        assert!(page.contains("<option value=\"alice\" selected>"), "{page}");
        let many: Vec<String> = (0..=PICK_MAX).map(|i| format!("u{i}")).collect();
        let page = pick("Users", "users", &many, &few).into_string();
        assert!(
            !page.contains("<select") && page.contains(">alice\nbob</textarea>"),
            "{page}"
        );
    }

    #[test]
    fn lists_take_repeated_keys_and_lines() {
        let f = fields(&[
            ("users", "alice"),
            ("users", "bob\n carol \n\n"),
            ("x", " "),
        ]);
        assert_eq!(f.list("users"), ["alice", "bob", "carol"]);
        assert_eq!(f.opt("x"), None);
        assert!(!f.flag("y"));
        assert_eq!(f.time("none").unwrap(), serde_json::Value::Null);
        assert_eq!(
            fields(&[("t", "2026-11-23T17:20")]).time("t").unwrap(),
            "2026-11-23T17:20:00Z"
        );
        assert!(fields(&[("t", "soon")]).time("t").is_err());
    }
}
