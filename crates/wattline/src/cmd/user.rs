//! `wattline user`: create and manage web/API accounts directly in the data directory's
//! database (the first admin, password resets when nobody can sign in, tokens for scripts).
//! Every change is written to the audit trail with the actor `cli:<os user>`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, anyhow};
use clap::{Args as ClapArgs, Subcommand};
use server::UserChange;
use server::http::{AppState, HttpConfig, Role};

use super::{BadInput, Failure, Outcome};

/// Examples shown after `--help`.
pub const EXAMPLES: &str = "Examples:
  printf '%s\\n' 'a long passphrase' | wattline user add alice --role admin --password-stdin --data-dir wattline-data
  wattline user add bob --role customer --customer c-17 --data-dir wattline-data   (prompts twice)
  wattline user list --data-dir wattline-data
  wattline user role bob operator --data-dir wattline-data
  wattline user passwd bob --password-stdin --data-dir wattline-data
  wattline user disable bob --data-dir wattline-data
  wattline user token alice --name grafana --scope read --expires-in-days 90 --data-dir wattline-data";

/// Create and manage user accounts (roles admin, operator, customer) and API tokens.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    /// The server: `--data-dir DIR` (an SQLite server) or `--config FILE` (any store).
    #[command(flatten)]
    target: super::StoreTarget,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Create an account.
    Add {
        /// Login name (A-Z a-z 0-9 . _ @ -).
        name: String,
        /// admin, operator or customer.
        #[arg(long)]
        role: String,
        /// For customers: the customer whose meters the account sees.
        #[arg(long)]
        customer: Option<String>,
        /// Read the password from the first line of stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    List,
    /// Set a new password (ends the account's sessions).
    Passwd {
        /// Login name.
        name: String,
        /// Read the password from the first line of stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change an account's role (and customer binding).
    Role {
        /// Login name.
        name: String,
        /// admin, operator or customer.
        role: String,
        /// For customers: the customer whose meters the account sees.
        #[arg(long)]
        customer: Option<String>,
    },
    /// Disable an account (it cannot sign in; its sessions and tokens stop working).
    Disable {
        /// Login name.
        name: String,
    },
    /// Enable a disabled account.
    Enable {
        /// Login name.
        name: String,
    },
    /// Create an API token for an account (printed once).
    Token {
        /// Login name of the owner.
        name: String,
        /// What the token is for.
        #[arg(long = "name", id = "token_name", default_value = "cli")]
        token_name: String,
        /// read, write, commands or admin (repeat for several).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Expiry in days (none: never expires).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
}

/// Runs `wattline user`.
pub fn run(args: &Args) -> Outcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(args))
}

fn parse_role(s: &str) -> Result<Role, Failure> {
    Role::parse(s)
        .ok_or_else(|| anyhow!("unknown role {s:?}: use admin, operator or customer"))
        .bad_input()
}

/// Reads a password: the first line of stdin, or two matching prompts on a terminal.
fn read_password(from_stdin: bool) -> Result<String, Failure> {
    let stdin = std::io::stdin();
    if !from_stdin && stdin.is_terminal() {
        // No echo suppression without a terminal crate: say so rather than pretend.
        eprint!("password (shown as you type; prefer --password-stdin from a password manager): ");
        let _ = std::io::stderr().flush();
        let mut a = String::new();
        stdin
            .lock()
            .read_line(&mut a)
            .context("reading the password")?;
        eprint!("again: ");
        let _ = std::io::stderr().flush();
        let mut b = String::new();
        stdin
            .lock()
            .read_line(&mut b)
            .context("reading the password")?;
        if a.trim_end_matches(['\r', '\n']) != b.trim_end_matches(['\r', '\n']) {
            return Err(Failure::BadInput(anyhow!("the two passwords differ")));
        }
        return Ok(a.trim_end_matches(['\r', '\n']).to_owned());
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let pw = line.trim_end_matches(['\r', '\n']).to_owned();
    if pw.is_empty() {
        return Err(Failure::BadInput(anyhow!(
            "no password on stdin (pipe one line, e.g. from a password manager)"
        )));
    }
    Ok(pw)
}

fn api_failure(e: server::http::ApiError) -> Failure {
    let status = e.status.as_u16();
    if (400..500).contains(&status) {
        Failure::BadInput(anyhow!("{}", e.message))
    } else {
        Failure::Runtime(anyhow!("{}", e.message))
    }
}

async fn run_async(args: &Args) -> Outcome {
    let (_, db) = args.target.open().await?;
    let state = AppState::new(db, HttpConfig::default());
    let accounts = state.db.accounts();
    let actor = super::cli_actor();
    match &args.action {
        Action::Add {
            name,
            role,
            customer,
            password_stdin,
        } => {
            let role = parse_role(role)?;
            let password = read_password(*password_stdin)?;
            let user = server::auth::create_user(
                &state,
                &actor,
                None,
                name,
                &password,
                role,
                customer.clone(),
            )
            .await
            .map_err(api_failure)?;
            println!(
                "created user {} (id {}, role {})",
                user.username,
                user.id,
                user.role.as_str()
            );
        }
        Action::List => {
            let users = accounts.users().await.context("listing users")?;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{:<6} {:<24} {:<9} {:<16} state",
                "id", "username", "role", "customer"
            );
            for u in users {
                let _ = writeln!(
                    out,
                    "{:<6} {:<24} {:<9} {:<16} {}",
                    u.id,
                    u.username,
                    u.role.as_str(),
                    u.customer_id.as_deref().unwrap_or("-"),
                    if u.disabled { "disabled" } else { "active" }
                );
            }
        }
        Action::Passwd {
            name,
            password_stdin,
        } => {
            let user = find(accounts, name).await?;
            let password = read_password(*password_stdin)?;
            server::auth::check_new_password(&password).bad_input()?;
            let hash = server::auth::hash_password(&password).context("hashing the password")?;
            accounts
                .set_password(user.id, &hash, server::now_ms())
                .await
                .context("storing the password")?;
            let ended = accounts
                .revoke_user_sessions(user.id)
                .await
                .context("ending sessions")?;
            server::auth::audit_outcome(
                &state,
                &actor,
                None,
                "user.password_reset",
                &format!("user:{name}"),
                &format!("password reset; {ended} session(s) ended"),
                "ok",
            )
            .await
            .map_err(api_failure)?;
            println!("password of {name} changed; {ended} session(s) ended");
        }
        Action::Role {
            name,
            role,
            customer,
        } => {
            let user = find(accounts, name).await?;
            let role = parse_role(role)?;
            let customer = if role == Role::Customer {
                customer.clone().or(user.customer_id.clone())
            } else {
                customer.clone()
            };
            change(&state, &actor, &user, role, customer, user.disabled).await?;
        }
        Action::Disable { name } | Action::Enable { name } => {
            let user = find(accounts, name).await?;
            let disabled = matches!(args.action, Action::Disable { .. });
            change(
                &state,
                &actor,
                &user,
                user.role,
                user.customer_id.clone(),
                disabled,
            )
            .await?;
        }
        Action::Token {
            name,
            token_name,
            scopes,
            expires_in_days,
        } => {
            let user = find(accounts, name).await?;
            let (token, info) = server::auth::create_api_token(
                &state,
                &actor,
                None,
                &user,
                token_name,
                scopes,
                *expires_in_days,
                None,
            )
            .await
            .map_err(api_failure)?;
            eprintln!(
                "token {} for {} (scopes {}); it is shown only now:",
                info.prefix,
                user.username,
                info.scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            println!("{token}");
        }
    }
    Ok(())
}

/// The account named `name`, or a usage error.
async fn find(accounts: &dyn server::AccountStore, name: &str) -> Result<server::User, Failure> {
    let found = accounts
        .user_credentials(name)
        .await
        .context("reading the account")?;
    match found {
        Some((user, _)) => Ok(user),
        None => Err(Failure::BadInput(anyhow!("there is no user {name:?}"))),
    }
}

async fn change(
    state: &AppState,
    actor: &str,
    user: &server::User,
    role: Role,
    customer: Option<String>,
    disabled: bool,
) -> Outcome {
    server::auth::update_user(
        state,
        actor,
        None,
        user,
        &UserChange {
            role: Some(role),
            customer_id: Some(customer),
            disabled: Some(disabled),
        },
    )
    .await
    .map_err(api_failure)?;
    println!(
        "{}: role {}, {}",
        user.username,
        role.as_str(),
        if disabled { "disabled" } else { "active" }
    );
    Ok(())
}
