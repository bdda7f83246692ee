//! `K2_…` environment variables over the file: `K2_QUERY__TIMEOUT=5s` sets
//! `query.timeout`.

use anyhow::{Context, bail};

/// Environment variables that are not configuration keys.
const NOT_KEYS: &[&str] = &["K2_CONFIG", "K2_LOG"];
/// `K2_TEST_…` variables belong to the test suite (which services to use), not to K2.
const TEST_PREFIX: &str = "K2_TEST_";

/// Sets in `table` every key the variables name.
pub fn overlay(table: &mut toml::Table, vars: &[(String, String)]) -> anyhow::Result<()> {
    for (name, value) in vars {
        let Some(key) = name.strip_prefix("K2_") else {
            continue;
        };
        if NOT_KEYS.contains(&name.as_str()) || name.starts_with(TEST_PREFIX) || key.is_empty() {
            continue;
        }
        let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
        set(table, &path, parse_value(value))
            .with_context(|| format!("environment variable {name}"))?;
    }
    Ok(())
}

/// Numbers, booleans and arrays keep their type; anything else is a string.
fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !matches!(v, toml::Value::Table(_)))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn set(table: &mut toml::Table, path: &[String], value: toml::Value) -> anyhow::Result<()> {
    match path {
        [] => bail!("empty key"),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [head, rest @ ..] => {
            let entry = table
                .entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set(t, rest, value),
                _ => bail!("'{head}' is not a section"),
            }
        }
    }
}
