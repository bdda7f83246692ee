//! Credentials in the configuration: each credential key takes the value itself or, better,
//! a reference to where it is kept — `env:NAME` (an environment variable) or `file:PATH`
//! (a file's contents without the trailing newline, e.g. a mounted secret) — resolved here
//! as the configuration is read. A value written into the configuration file itself is
//! warned about (refused with `api.production = true`): a file is copied, committed and
//! shown where a secret must not be.
//!
//! The resolved values are typed `k2_model::Secret` (shown as `***`), except
//! `catalog.uri`, whose password is masked wherever the URI is shown.

use anyhow::{Context, bail};

/// Every configuration key that holds a credential.
pub const CREDENTIAL_KEYS: &[&str] = &[
    "catalog.uri",
    "catalog.token",
    "catalog.credential",
    "warehouse.s3.access_key_id",
    "warehouse.s3.secret_access_key",
    "registry.password",
    "log.kafka.sasl_password",
    "log.kafka.ssl_key_password",
];

/// Replaces each credential key's `env:`/`file:` reference in `table` with what it names,
/// reading variables through `var`.
pub fn resolve(
    table: &mut toml::Table,
    var: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    for key in CREDENTIAL_KEYS {
        let Some(toml::Value::String(raw)) = lookup(table, key) else {
            continue;
        };
        let resolved = if let Some(name) = raw.strip_prefix("env:") {
            match var(name) {
                Some(v) if !v.is_empty() => v,
                Some(_) => bail!("{key}: {raw}: the environment variable is empty"),
                None => bail!("{key}: {raw}: the environment variable is not set"),
            }
        } else if let Some(path) = raw.strip_prefix("file:") {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{key}: {raw}: the file cannot be read"))?;
            let value = text.strip_suffix('\n').unwrap_or(&text);
            let value = value.strip_suffix('\r').unwrap_or(value);
            if value.is_empty() {
                bail!("{key}: {raw}: the file is empty");
            }
            value.to_string()
        } else {
            continue;
        };
        *raw = resolved;
    }
    Ok(())
}

/// The credential keys the configuration file writes out in clear (references and empty
/// values are fine; a catalog URI only when it holds a password).
pub fn written_in_clear(file: &toml::Table) -> Vec<&'static str> {
    CREDENTIAL_KEYS
        .iter()
        .copied()
        .filter(|key| match lookup_ref(file, key) {
            Some(toml::Value::String(v)) if v.is_empty() => false,
            Some(toml::Value::String(v)) if k2_model::Secret::is_reference(v) => false,
            Some(toml::Value::String(v)) if *key == "catalog.uri" => uri_has_password(v),
            Some(_) => true,
            None => false,
        })
        .collect()
}

/// `scheme://user:password@host…`
fn uri_has_password(uri: &str) -> bool {
    let Some((_, rest)) = uri.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

fn lookup<'a>(table: &'a mut toml::Table, key: &str) -> Option<&'a mut toml::Value> {
    let mut parts = key.split('.');
    let mut value = table.get_mut(parts.next()?)?;
    for part in parts {
        value = value.as_table_mut()?.get_mut(part)?;
    }
    Some(value)
}

fn lookup_ref<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let mut parts = key.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn references_resolve_from_the_environment_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s3-secret");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let mut t = table(&format!(
            "[catalog]\ntoken = \"env:TOKEN\"\n[warehouse.s3]\nsecret_access_key = \"file:{}\"\naccess_key_id = \"plain\"\n",
            file.display()
        ));
        resolve(&mut t, |n| (n == "TOKEN").then(|| "from-env".to_string())).unwrap();
        assert_eq!(t["catalog"]["token"].as_str(), Some("from-env"));
        assert_eq!(
            t["warehouse"]["s3"]["secret_access_key"].as_str(),
            Some("from-a-file")
        );
        assert_eq!(
            t["warehouse"]["s3"]["access_key_id"].as_str(),
            Some("plain")
        );
    }

    #[test]
    fn a_reference_to_nothing_names_the_key_and_not_a_value() {
        let mut t = table("[registry]\npassword = \"env:K2_NOT_SET_ANYWHERE\"\n");
        let e = resolve(&mut t, |_| None).unwrap_err().to_string();
        assert_eq!(
            e,
            "registry.password: env:K2_NOT_SET_ANYWHERE: the environment variable is not set"
        );
        let mut t = table("[catalog]\ncredential = \"file:/nonexistent/k2-secret\"\n");
        let e = format!("{:#}", resolve(&mut t, |_| None).unwrap_err());
        assert!(
            e.starts_with(
                "catalog.credential: file:/nonexistent/k2-secret: the file cannot be read"
            ),
            "{e}"
        );
    }

    #[test]
    fn secrets_written_in_the_file_are_found() {
        let t = table(
            "[catalog]\nuri = \"postgres://k2:pw@db:5432/k2\"\ntoken = \"env:T\"\n[registry]\npassword = \"clear\"\n[warehouse.s3]\naccess_key_id = \"\"\n",
        );
        assert_eq!(written_in_clear(&t), ["catalog.uri", "registry.password"]);
        let t = table("[catalog]\nuri = \"postgres://k2@db:5432/k2\"\n");
        assert!(written_in_clear(&t).is_empty());
    }
}
