use clap::Parser;
use hyperion_vault_controller::args::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => {
            print!("{}", hyperion_vault_crds::crd_yaml()?);
            Ok(())
        }
        Some(Command::Run) | None => {
            hyperion_vault_controller::init_tracing(&cli.run.log_format);
            cli.run.run().await
        }
    }
}
