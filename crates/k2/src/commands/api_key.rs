//! `k2 api-key new`: a random key, of which only the digest goes into the configuration.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use k2_api::Scope;

#[derive(Args)]
pub struct ApiKeyArgs {
    #[command(subcommand)]
    command: ApiKeyCommand,
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// A new random key; only its SHA-256 digest goes into the configuration.
    New {
        /// Who holds it (shown in access logs).
        #[arg(long)]
        name: String,
        /// Comma-separated: read, sql, admin.
        #[arg(long, value_delimiter = ',', default_value = "read")]
        scopes: Vec<Scope>,
    },
}

pub fn run(args: ApiKeyArgs) -> anyhow::Result<ExitCode> {
    let ApiKeyCommand::New { name, scopes } = args.command;
    let key = k2_api::generate_key();
    eprintln!("the key (shown once; give it to {name}):");
    println!("{key}");
    eprintln!("\nadd to k2.toml (or to api.keys_file as [[keys]]):");
    let scopes: Vec<&str> = scopes.iter().map(|s| s.name()).collect();
    eprintln!(
        "[[api.keys]]\nname = {name:?}\nsha256 = \"{}\"\nscopes = {scopes:?}",
        k2_api::digest_hex(&key)
    );
    Ok(ExitCode::SUCCESS)
}
