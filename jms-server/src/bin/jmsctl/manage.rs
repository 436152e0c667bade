//! `show`, `set`, `delete` and `edit` of one entity, the same for every
//! kind: reads and writes go through the admin API (GET, PATCH, DELETE), so
//! every change gets the server's checks and its one-line refusals.
//!
//! - `set` sends a JSON merge patch of the named fields; a list field's
//!   `--add-…`/`--remove-…` are applied to the list read just before.
//! - `delete` first says what the entity touches (read from the policy
//!   export), then asks on the terminal; without one it needs `--yes`.
//! - `edit` opens the entity's policy-file form as YAML in `$VISUAL` or
//!   `$EDITOR`, checks the result as a policy file would be checked, shows
//!   the fields that changed and sends them as one patch: a refused edit
//!   (bad YAML, unknown field, the server's check) changes nothing.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use jms_server::client::Client;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::remote::cell;
use crate::Outcome;

/// `--json` of the commands that print one entity.
#[derive(Args, Clone, Copy)]
pub struct JsonArg {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--yes` and `--json` of every delete.
#[derive(Args, Clone, Copy)]
pub struct DeleteArgs {
    /// Do not ask (needed without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print what was deleted and what it touched as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One entity on the server.
pub struct Entity {
    /// `user`, `asset`, `account`, … (in messages).
    pub kind: &'static str,
    /// Its name in messages (`alice`, `web01/root`, `/Default/prod`).
    pub label: String,
    /// Its URL under the server.
    pub segments: Vec<String>,
    /// The field that names it (never changed by a patch).
    pub key: &'static str,
    /// Fields of the view that the server keeps (ids, times, `has_…`,
    /// nested rows): shown, never edited.
    pub server_fields: &'static [&'static str],
    /// Checks an edited form the way a policy file's entry is read.
    pub check: fn(&Value) -> std::result::Result<(), String>,
}

/// [`Entity::check`] for a model type.
pub fn check_as<T: DeserializeOwned>(value: &Value) -> std::result::Result<(), String> {
    serde_json::from_value::<T>(value.clone())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl Entity {
    fn path(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }

    /// The entity as the server shows it.
    pub fn fetch(&self, client: &Client) -> Result<Value> {
        Ok(client.get(&self.path(), &[])?)
    }

    /// The view without the server's fields: the policy-file form.
    fn form(&self, view: &Value) -> Map<String, Value> {
        let mut form = view.as_object().cloned().unwrap_or_default();
        for field in self.server_fields {
            form.remove(*field);
        }
        form
    }
}

/// Prints one JSON object as aligned `field  value` lines.
pub fn print_detail(value: &Value) {
    let Some(map) = value.as_object() else {
        println!("{}", cell(&json!({ "v": value }), "v"));
        return;
    };
    let width = map.keys().map(|k| k.len()).max().unwrap_or(0);
    for (field, item) in map {
        let text = match item {
            // Nested rows (an asset's accounts, protocols, login ACLs):
            // compact, one per line under the field.
            Value::Array(items) if items.iter().any(Value::is_object) => {
                println!("{field}");
                for item in items {
                    println!("  - {}", compact(item));
                }
                continue;
            }
            Value::Object(_) => compact(item),
            _ => cell(&json!({ "v": item }), "v"),
        };
        println!("{}", format!("{field:<width$}  {text}").trim_end());
    }
}

fn compact(value: &Value) -> String {
    cell(&json!({ "v": value.to_string() }), "v")
}

pub fn show(client: &Client, entity: &Entity, out: JsonArg) -> Result<Outcome> {
    let view = entity.fetch(client)?;
    if out.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print_detail(&view);
    }
    Ok(Outcome::Ok)
}

/// Sends `patch` and says what changed.
pub fn patch(
    client: &Client,
    entity: &Entity,
    patch: Map<String, Value>,
    out: JsonArg,
) -> Result<Outcome> {
    if patch.is_empty() {
        bail!(
            "nothing to change for {} {}: name a field to set (see --help)",
            entity.kind,
            entity.label
        );
    }
    let fields: Vec<&str> = patch.keys().map(String::as_str).collect();
    let view = client
        .call(
            Method::PATCH,
            &entity.path(),
            &[],
            Some(&Value::Object(patch.clone())),
        )
        .with_context(|| format!("{} {} not changed", entity.kind, entity.label))?
        .unwrap_or_default();
    if out.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        println!(
            "changed {} {} ({})",
            entity.kind,
            entity.label,
            fields.join(", ")
        );
    }
    Ok(Outcome::Ok)
}

/// Adds and removes items of a list field (`groups`, `login_acl.allow_from`,
/// `protocols`) of the entity as read now, into `patch`.
pub struct ListChange<'a> {
    /// The field, `outer.inner` for one level of nesting.
    pub field: &'static str,
    pub add: Vec<Value>,
    pub remove: &'a [String],
    /// Whether an item is the one a `--remove-…` value names.
    pub names: fn(&Value, &str) -> bool,
}

/// An item is named by its own text.
pub fn same_text(item: &Value, name: &str) -> bool {
    item.as_str() == Some(name)
}

/// Strings as JSON values.
pub fn strings(items: &[String]) -> Vec<Value> {
    items.iter().map(|s| Value::String(s.clone())).collect()
}

/// Applies `changes` to `current` (the entity's view) into `patch`.
pub fn apply_lists(
    entity: &Entity,
    current: &Value,
    changes: &[ListChange<'_>],
    patch: &mut Map<String, Value>,
) -> Result<()> {
    for change in changes {
        if change.add.is_empty() && change.remove.is_empty() {
            continue;
        }
        let (outer, inner) = match change.field.split_once('.') {
            Some((outer, inner)) => (outer, Some(inner)),
            None => (change.field, None),
        };
        let mut holder = &current[outer];
        if let Some(inner) = inner {
            holder = &holder[inner];
        }
        let mut list = holder.as_array().cloned().unwrap_or_default();
        for name in change.remove {
            let before = list.len();
            list.retain(|item| !(change.names)(item, name));
            if list.len() == before {
                bail!(
                    "{} {}: `{}` has no `{name}`",
                    entity.kind,
                    entity.label,
                    change.field
                );
            }
        }
        for item in &change.add {
            if !list.contains(item) {
                list.push(item.clone());
            }
        }
        match inner {
            None => {
                patch.insert(outer.to_string(), Value::Array(list));
            }
            Some(inner) => {
                let slot = patch
                    .entry(outer.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = slot {
                    map.insert(inner.to_string(), Value::Array(list));
                }
            }
        }
    }
    Ok(())
}

/// What deleting an entity touches: (what, names).
pub type Effects = Vec<(String, Vec<String>)>;

/// Says what a deletion touches, asks (or needs `--yes`), deletes.
pub fn delete(
    client: &Client,
    entity: &Entity,
    effects: Effects,
    notes: &[String],
    args: DeleteArgs,
) -> Result<Outcome> {
    // Read it first: a missing entity is a 404, not a question.
    entity.fetch(client)?;
    if !args.json || !args.yes {
        let out = &mut std::io::stderr();
        let _ = writeln!(out, "deleting {} {}:", entity.kind, entity.label);
        for (what, names) in &effects {
            let _ = writeln!(out, "  {}", effect_line(what, names));
        }
        for note in notes {
            let _ = writeln!(out, "  {note}");
        }
    }
    confirm("delete", entity.kind, &entity.label, args.yes)?;
    client
        .call(Method::DELETE, &entity.path(), &[], None)
        .with_context(|| format!("{} {} not deleted", entity.kind, entity.label))?;
    if args.json {
        let touched: Map<String, Value> = effects
            .into_iter()
            .map(|(what, names)| (what, Value::from(names)))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "deleted": entity.kind,
                "name": entity.label,
                "touched": touched,
            }))?
        );
    } else {
        println!("deleted {} {}", entity.kind, entity.label);
    }
    Ok(Outcome::Ok)
}

/// Asks on the terminal whether to `verb` (`delete`) the `kind` `label`;
/// without a terminal only `yes` (`--yes`) lets it go ahead.
pub fn confirm(verb: &str, kind: &str, label: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    let ing = format!("{}ing", verb.trim_end_matches('e'));
    if !std::io::stdin().is_terminal() {
        bail!("not {ing} {kind} {label} without a terminal to confirm: give --yes");
    }
    let mut first = verb.chars();
    let verb = first
        .next()
        .map(|c| c.to_uppercase().collect::<String>() + first.as_str())
        .unwrap_or_default();
    eprint!("{verb} {kind} {label}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the answer")?;
    if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        bail!("{kind} {label} left as it is");
    }
    Ok(())
}

fn effect_line(what: &str, names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut line = format!("{} {what}", names.len());
    if !names.is_empty() {
        let shown: Vec<String> = names
            .iter()
            .take(SHOWN)
            .map(|n| jms_core::escape::visible(n).into_owned())
            .collect();
        line.push_str(": ");
        line.push_str(&shown.join(", "));
        if names.len() > SHOWN {
            line.push_str(&format!(", … ({} more)", names.len() - SHOWN));
        }
    }
    line
}

/// The whole policy (no secrets), to tell what a deletion touches.
pub fn policy(client: &Client) -> Result<Value> {
    Ok(client.get(&["api", "v1", "policy"], &[])?)
}

/// Names (`key`) of the items of `collection` whose list `field` has an
/// entry `matches` accepts.
pub fn naming(
    doc: &Value,
    collection: &str,
    key: &str,
    field: &str,
    matches: impl Fn(&str) -> bool,
) -> Vec<String> {
    doc[collection]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|item| {
                    item[field]
                        .as_array()
                        .is_some_and(|list| list.iter().filter_map(Value::as_str).any(&matches))
                })
                .filter_map(|item| item[key].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `path` is `node` or below it.
pub fn under(path: &str, node: &str) -> bool {
    path == node
        || path
            .strip_prefix(node)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Opens the entity in the editor, checks, shows the diff and applies it.
pub fn edit(client: &Client, entity: &Entity) -> Result<Outcome> {
    let view = entity.fetch(client)?;
    let form = entity.form(&view);
    let yaml = serde_yaml_ng::to_string(&Value::Object(form.clone()))?;
    let header = format!(
        "# {} {}: change fields, save and quit to apply; an empty file cancels.\n\
         # Not shown (kept by the server): {}.\n",
        entity.kind,
        entity.label,
        entity.server_fields.join(", ")
    );
    let path = temp_file()?;
    let result = (|| {
        std::fs::write(&path, format!("{header}{yaml}"))
            .with_context(|| path.display().to_string())?;
        run_editor(&path)?;
        std::fs::read_to_string(&path).with_context(|| path.display().to_string())
    })();
    let _ = std::fs::remove_file(&path);
    let edited = result?;
    let what = format!("{} {}", entity.kind, entity.label);
    if edited
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        println!("edit cancelled: {what} not changed");
        return Ok(Outcome::Ok);
    }
    let refused = |why: String| anyhow!("{what} not changed: {why}");
    let edited: Value = serde_yaml_ng::from_str(&edited)
        .map_err(|e| refused(format!("the edited YAML does not parse: {e}")))?;
    let Value::Object(edited) = edited else {
        return Err(refused("the edited YAML is not a mapping of fields".into()));
    };
    if edited.get(entity.key) != form.get(entity.key) {
        return Err(refused(format!(
            "`{}` cannot change (create a new one and delete this one)",
            entity.key
        )));
    }
    if let Some(field) = entity
        .server_fields
        .iter()
        .find(|f| edited.contains_key(**f))
    {
        return Err(refused(format!("`{field}` is kept by the server")));
    }
    (entity.check)(&Value::Object(edited.clone())).map_err(refused)?;
    let mut patch = Map::new();
    let mut lines = Vec::new();
    for (field, old) in &form {
        match edited.get(field) {
            None => {
                lines.push(format!("- {field}: {}", shown(old)));
                patch.insert(field.clone(), Value::Null);
            }
            Some(new) if new != old => {
                lines.push(format!("~ {field}: {} → {}", shown(old), shown(new)));
                patch.insert(field.clone(), new.clone());
            }
            Some(_) => {}
        }
    }
    for (field, new) in &edited {
        if !form.contains_key(field) {
            lines.push(format!("+ {field}: {}", shown(new)));
            patch.insert(field.clone(), new.clone());
        }
    }
    if patch.is_empty() {
        println!("no changes to {what}");
        return Ok(Outcome::Ok);
    }
    for line in &lines {
        println!("{}", jms_core::escape::visible(line));
    }
    client
        .call(
            Method::PATCH,
            &entity.path(),
            &[],
            Some(&Value::Object(patch)),
        )
        .with_context(|| format!("{what} not changed"))?;
    println!(
        "changed {what} ({} field{})",
        lines.len(),
        if lines.len() == 1 { "" } else { "s" }
    );
    Ok(Outcome::Ok)
}

fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A new private file for the editor (0600, never an existing one).
fn temp_file() -> Result<PathBuf> {
    let dir = std::env::temp_dir();
    for attempt in 0..16u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = dir.join(format!(
            "jmsctl-edit-{}-{nanos}-{attempt}.yaml",
            std::process::id()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| path.display().to_string()),
        }
    }
    bail!("cannot create a file for the editor in {}", dir.display())
}

/// Runs `$VISUAL`, `$EDITOR` or `vi` on `path` (through `sh`, so an
/// editor with arguments such as `code --wait` works).
fn run_editor(path: &std::path::Path) -> Result<()> {
    let editor = ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("jmsctl-edit")
        .arg(path)
        .status()
        .with_context(|| format!("running the editor `{editor}`"))?;
    if !status.success() {
        bail!("the editor `{editor}` failed ({status}): nothing changed");
    }
    Ok(())
}
