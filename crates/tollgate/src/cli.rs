//! The command line: one binary, clap subcommands. Every command reads the same configuration as the server;
//! database commands go through the same service functions as the HTTP API, so the rules are the same, and each
//! change is audited as the operator's ([`Caller::cli`]: no request, so no origin).

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tollgate_core::ports::SystemClock;
use tollgate_server::config::ExposeSecret;
use tollgate_server::objects::{CreatedTenant, KeyObject};
use tollgate_server::service::{Caller, audit, credits, keys, tenants};
use tollgate_server::{App, AppState, Config};

/// Tollgate: API keys, tenants, credits and an OpenAI-compatible API in front of any model server.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
pub struct Cli {
    /// Configuration file (TOML); without it the embedded defaults apply.
    #[arg(long, global = true, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Print the objects as JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply pending migrations, then serve HTTP.
    Serve,
    /// Apply pending migrations and exit (running it again is harmless).
    Migrate,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Tenant commands.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Credit commands.
    Credits {
        #[command(subcommand)]
        command: CreditsCommand,
    },
    /// Project key commands.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Audit log commands.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// A deterministic OpenAI-compatible server for demos, development and benchmarks.
    MockUpstream(MockUpstreamArgs),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the audit log's hash chains and name the first broken link of each (exit 1 if any is broken).
    Verify {
        /// One tenant (`org_…`); default: every tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load and validate the configuration, then print what it defines.
    Check,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant with its Default project, owner, and the owner's admin key (shown once).
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// A plan the configuration defines (free, pro, enterprise by default).
        #[arg(long)]
        plan: String,
        /// The owner's email.
        #[arg(long)]
        owner_email: String,
        /// The owner's dashboard password (prefer the environment variable: arguments show in `ps`).
        #[arg(long, env = "TOLLGATE_OWNER_PASSWORD", hide_env_values = true)]
        owner_password: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum CreditsCommand {
    /// Grant whole cents of credit to a tenant.
    Grant {
        /// The tenant (`org_…`).
        #[arg(long)]
        tenant: String,
        /// Whole cents, positive.
        #[arg(long)]
        cents: i64,
        /// Why, for the ledger.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create a project key (its value is shown once).
    Create {
        /// The project (`proj_…`).
        #[arg(long)]
        project: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
    /// Revoke a project or admin key at once.
    Revoke {
        /// The key's id (`key_…` or `admin_key_…`).
        id: String,
    },
    /// Tell which tenant, project and key a found string is, and whether it is active.
    Lookup {
        /// The suspected key.
        value: String,
    },
}

#[derive(Debug, Args)]
struct MockUpstreamArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: String,
    #[command(flatten)]
    mock: tollgate_mock::MockArgs,
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::MockUpstream(args) => return mock_upstream(args).await,
        Command::Config {
            command: ConfigCommand::Check,
        } => return config_check(cli.config, cli.json),
        _ => {}
    }
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let applied = tollgate_store::migrate(config.database_url.expose_secret()).await?;
            print(cli.json, &serde_json::json!({"applied": applied}), || {
                format!("{applied} migration(s) applied; the database is up to date")
            })
        }
        Command::Tenant {
            command:
                TenantCommand::Create {
                    name,
                    plan,
                    owner_email,
                    owner_password,
                },
        } => {
            let app = app(config).await?;
            let input = tenants::CreateTenant {
                name,
                plan,
                owner_email,
                owner_password,
            };
            let (new, secret) = tenants::create(&app, &Caller::cli(), input).await?;
            let created = CreatedTenant::new(&new, &secret, app.clock.now());
            print(cli.json, &created, || {
                format!(
                    "tenant   {} ({}, plan {})\nproject  {} (Default)\nowner    {} ({})\nadmin key (shown once, store it now):\n{}",
                    new.tenant.id,
                    new.tenant.name,
                    new.tenant.plan,
                    new.project.id,
                    new.owner.id,
                    new.owner.email,
                    secret.expose_secret()
                )
            })
        }
        Command::Credits {
            command:
                CreditsCommand::Grant {
                    tenant,
                    cents,
                    reason,
                },
        } => {
            let app = app(config).await?;
            let input = credits::Grant {
                amount_cents: cents,
                reason,
            };
            let object = credits::grant(&app, &Caller::cli(), &tenant, input).await?;
            print(cli.json, &object, || {
                format!("granted {cents} cents to {tenant}")
            })
        }
        Command::Key {
            command:
                KeyCommand::Create {
                    project,
                    name,
                    description,
                },
        } => {
            let app = app(config).await?;
            let found = app
                .store
                .find_project(&project)
                .await?
                .with_context(|| format!("no project {project}"))?;
            let tenant = app
                .store
                .get_tenant(&found.tenant_id)
                .await?
                .with_context(|| format!("no tenant for project {project}"))?;
            let input = keys::CreateProjectKey {
                name,
                description,
                ..Default::default()
            };
            let (key, secret) = keys::create_project_key(
                &app,
                &Caller::cli(),
                &tenant.id,
                &tenant.plan,
                &found.id,
                input,
            )
            .await?;
            print(
                cli.json,
                &KeyObject::with_secret(&key, &secret, app.clock.now()),
                || {
                    format!(
                        "key {} in {} (shown once, store it now):\n{}",
                        key.id,
                        found.id,
                        secret.expose_secret()
                    )
                },
            )
        }
        Command::Key {
            command: KeyCommand::Revoke { id },
        } => {
            let app = app(config).await?;
            let key = app
                .store
                .find_key(&id)
                .await?
                .with_context(|| format!("no key {id}"))?;
            let key = keys::revoke(&app, &Caller::cli(), &key).await?;
            print(cli.json, &KeyObject::new(&key, app.clock.now()), || {
                format!("key {} revoked ({}…{})", key.id, key.prefix, key.last4)
            })
        }
        Command::Key {
            command: KeyCommand::Lookup { value },
        } => {
            let app = app(config).await?;
            let Some(found) = keys::lookup(&app, &value).await? else {
                bail!("not a key of this deployment");
            };
            let status = found.key.status(app.clock.now()).as_str();
            let owner = match &found.key.owner {
                tollgate_core::tenant::KeyOwner::Project(p) => format!("project {p}"),
                tollgate_core::tenant::KeyOwner::Member(m) => format!("admin key of member {m}"),
            };
            print(
                cli.json,
                &serde_json::json!({
                    "tenant_id": found.key.tenant_id,
                    "key": KeyObject::new(&found.key, app.clock.now()),
                }),
                || {
                    format!(
                        "tenant {} · {owner} · key {} · {status}",
                        found.key.tenant_id, found.key.id
                    )
                },
            )
        }
        Command::Audit {
            command: AuditCommand::Verify { tenant },
        } => {
            let app = app(config).await?;
            let reports = audit::verify(&app, tenant.as_deref()).await?;
            if let Some(tenant) = tenant.filter(|_| reports.is_empty()) {
                bail!("no tenant {tenant}");
            }
            let broken = reports.iter().filter(|r| r.broken.is_some()).count();
            print(cli.json, &reports, || {
                let mut lines: Vec<String> = reports
                    .iter()
                    .filter_map(|r| {
                        r.broken
                            .as_ref()
                            .map(|b| format!("BROKEN  tenant {}: {b}", r.tenant_id))
                    })
                    .collect();
                let events: u64 = reports.iter().map(|r| r.events).sum();
                lines.push(format!(
                    "{} chain(s) checked, {events} event(s); {broken} broken",
                    reports.len()
                ));
                lines.join("\n")
            })?;
            if broken > 0 {
                bail!("{broken} audit chain(s) broken");
            }
            Ok(())
        }
        Command::MockUpstream(_) | Command::Config { .. } => Ok(()),
    }
}

/// Prints `value` as JSON, or the text `human` builds.
fn print<T: Serialize>(
    json: bool,
    value: &T,
    human: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, value)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", human())?;
    }
    Ok(())
}

/// Connects (and migrates) the store and builds the application, as `serve` does but without listening.
async fn app(config: Config) -> anyhow::Result<AppState> {
    let store =
        tollgate_store::connect_with(config.database_url.expose_secret(), config.durability)
            .await?;
    Ok(App::build(config, store, Arc::new(SystemClock))?)
}

fn config_check(path: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let config = Config::load(path.as_deref())?;
    let plans: Vec<String> = config.effective_plans().keys().cloned().collect();
    let models: Vec<String> = if config.models.is_empty() {
        vec!["echo".to_owned()]
    } else {
        config.models.iter().map(|m| m.id.clone()).collect()
    };
    print(
        json,
        &serde_json::json!({"valid": true, "listen": config.listen, "models": models, "plans": plans,
            "operator_api": config.operator_token.is_some()}),
        || {
            format!(
                "config OK: listen {}, models [{}], plans [{}], operator API {}",
                config.listen,
                models.join(", "),
                plans.join(", "),
                if config.operator_token.is_some() {
                    "on"
                } else {
                    "off"
                }
            )
        },
    )
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(config: Config) -> anyhow::Result<()> {
    init_logging();
    let addr = config.listen_addr()?;
    let state = app(config).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        models = state.catalog.iter().count(),
        operator_api = state.config.operator_token.is_some(),
        shared_rate_limits = state.config.redis_url.is_some(),
        rate_limit_fail = state.config.rate_limit_fail.as_str(),
        "tollgate is serving"
    );
    // `tollgate_server::serve` bounds its own drain by `shutdown_timeout_seconds` and cuts what is left.
    let budget = Duration::from_secs(state.config.shutdown_timeout_seconds);
    let signalled = Arc::new(std::sync::OnceLock::new());
    run_until_signal(None, |shutdown| {
        let signalled = Arc::clone(&signalled);
        let shutdown = async move {
            shutdown.await;
            let _ = signalled.set(std::time::Instant::now());
        };
        tollgate_server::serve(listener, state.clone(), shutdown)
    })
    .await?;
    // Every client connection has ended here, so no request can start more work: wait for what requests started
    // (upstream calls of clients that left, stream pumps) and flush the recorder, within what is left of the budget.
    let left = signalled
        .get()
        .map_or(budget, |at| budget.saturating_sub(at.elapsed()));
    state.close(left).await;
    tracing::info!("tollgate stopped");
    Ok(())
}

/// How long the mock upstream's requests in flight may take to finish after a shutdown signal.
const MOCK_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a server until SIGTERM or Ctrl-C, then lets it drain: for at most `drain` when given, else for as long as
/// the server itself allows.
async fn run_until_signal<F, Fut>(drain: Option<Duration>, start: F) -> anyhow::Result<()>
where
    F: FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    let notify = Arc::new(tokio::sync::Notify::new());
    let waiter = Arc::clone(&notify);
    let server = start(Box::pin(async move { waiter.notified().await }));
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return Ok(result?),
        () = shutdown_signal() => notify.notify_one(),
    }
    tracing::info!("shutdown signal received: draining requests in flight");
    let Some(drain) = drain else {
        return Ok(server.await?);
    };
    match tokio::time::timeout(drain, server).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::warn!("drain timed out; stopping with requests still open");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

async fn mock_upstream(args: MockUpstreamArgs) -> anyhow::Result<()> {
    init_logging();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "mock upstream is serving");
    let config = tollgate_mock::MockConfig::from(args.mock);
    run_until_signal(Some(MOCK_DRAIN_TIMEOUT), |shutdown| {
        tollgate_mock::serve(listener, config, shutdown)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
