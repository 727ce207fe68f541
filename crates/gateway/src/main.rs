//! `mercato`: the gateway binary. `serve` (default) runs the API; `migrate` applies the
//! migrations and exits; `print-openapi` writes the OpenAPI document as YAML.

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mercato_platform::{
    db, service,
    settings::{GatewayMode, Settings},
    telemetry,
};

#[derive(Parser)]
#[command(name = "mercato", version, about = "Mercato marketing automation API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve {
        /// Overrides `gateway.mode`.
        #[arg(long, value_enum)]
        mode: Option<Mode>,
        /// Overrides `server.port`.
        #[arg(long)]
        port: Option<u16>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Write the OpenAPI document as YAML to stdout or a file.
    PrintOpenapi {
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Embedded,
    Proxy,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, None | Some(Command::Serve { .. })) {
        mercato_content::inference::settle_thread_count();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut settings = Settings::load()?;
    match cli.command.unwrap_or(Command::Serve {
        mode: None,
        port: None,
    }) {
        Command::PrintOpenapi { out } => {
            let yaml = mercato_gateway::openapi().to_yaml()?;
            match out {
                Some(path) => std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{yaml}"),
            }
            Ok(())
        }
        Command::Migrate => {
            telemetry::init(&settings.log);
            let pool = db::connect(&settings)
                .await
                .context("connecting to Postgres")?;
            db::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve { mode, port } => {
            if let Some(mode) = mode {
                settings.gateway.mode = match mode {
                    Mode::Embedded => GatewayMode::Embedded,
                    Mode::Proxy => GatewayMode::Proxy,
                };
            }
            if let Some(port) = port {
                settings.server.port = port;
            }
            telemetry::init(&settings.log);
            let pool = db::connect(&settings)
                .await
                .context("connecting to Postgres")?;
            if settings.database.migrate_on_start {
                db::migrate(&pool).await?;
            }
            let settings = Arc::new(settings);
            let gateway = mercato_gateway::build(settings.clone(), pool.clone()).await?;
            tracing::info!(mode = ?settings.gateway.mode, "gateway ready");
            service::run(&settings, &pool, gateway.router, gateway.jobs).await
        }
    }
}
