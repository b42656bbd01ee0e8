use clap::Parser;

fn main() -> anyhow::Result<()> {
    hyperion_vault_api::cli::Cli::parse().run()
}
