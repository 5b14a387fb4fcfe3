//! The `latchkey` command: a thin shell over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use latchkey::clock::{Clock, SystemClock};
use latchkey::config::Settings;
use latchkey::db::Db;
use latchkey::startup::{Application, Dependencies, build_core};
use latchkey::{telemetry, tokens};

/// Latchkey: an OTP-driven session authentication server.
///
/// Settings come from built-in defaults, then the TOML file given with
/// --config, then LATCHKEY_* environment variables (the environment wins).
/// See the README for every setting.
#[derive(Parser)]
#[command(name = "latchkey", version)]
struct Cli {
    /// TOML file with settings (keys as the LATCHKEY_* variables, in lower
    /// case without the prefix, e.g. `bind = "0.0.0.0:8080"`).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run migrations and serve HTTP (the default).
    Serve,
    /// Run pending database migrations, then exit.
    Migrate,
    /// Print a bearer token with the admin scope (and nothing else) to stdout.
    AdminToken {
        /// Lifetime of the token in seconds.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u32).range(1..=31_536_000))]
        ttl: u32,
        /// The token's subject, naming the operator or backend that uses it.
        #[arg(long, default_value = "admin")]
        subject: String,
    },
    /// Add a new current signing key; tokens signed with older keys stay
    /// valid until they expire.
    RotateKey,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("latchkey: {err}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    // Only the server logs to stdout: the other commands keep stdout for
    // their result (admin-token prints the token alone).
    telemetry::init_tracing(&settings, !matches!(command, Command::Serve));

    match actix_web::rt::System::new().block_on(async { run(command, settings).await }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("latchkey: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> Result<(), String> {
    match command {
        Command::Serve => {
            let bind = settings.bind;
            let app = Application::build(settings, Dependencies::default())
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(address = %bind, port = app.port(), "latchkey is listening");
            app.run_until_stopped().await.map_err(|e| e.to_string())
        }
        Command::Migrate => {
            let db = Db::connect(settings.backend, &settings.database_url, 1)
                .map_err(|e| e.to_string())?;
            let applied = db.migrate().map_err(|e| e.to_string())?;
            eprintln!("latchkey: {applied} migration(s) applied");
            Ok(())
        }
        Command::AdminToken { ttl, subject } => {
            let core = build_core(settings, Dependencies::default())
                .await
                .map_err(|e| e.to_string())?;
            let (token, _) = core
                .tokens
                .issue(
                    &subject,
                    tokens::ADMIN_SCOPE,
                    chrono::Duration::seconds(i64::from(ttl)),
                    None,
                )
                .map_err(|e| e.to_string())?;
            println!("{token}");
            Ok(())
        }
        Command::RotateKey => {
            let db = Db::connect(settings.backend, &settings.database_url, 1)
                .map_err(|e| e.to_string())?;
            db.migrate().map_err(|e| e.to_string())?;
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let master = latchkey::master_key::MasterKey::load(
                settings.master_key.as_ref(),
                &settings.data_dir,
            )?;
            let mut conn = db.checkout().map_err(|e| e.to_string())?;
            let kid = tokens::rotate_signing_key(
                &mut conn,
                clock.as_ref(),
                &tokens::signing_key_sealer(&master),
            )?;
            eprintln!(
                "latchkey: new signing key {kid} is current; running servers sign with it within {} s (LATCHKEY_KEY_REFRESH_SECS) and accept its tokens at once",
                settings.key_refresh_secs
            );
            Ok(())
        }
    }
}
