//! `wattline pki init`: the CA, the broker and HTTPS certificates and the server master key of
//! a data directory (the file layout is documented in `server::pki::files`).

use std::path::PathBuf;

use anyhow::anyhow;
use server::pki::files::{InitOutcome, PkiFiles};

use super::{BadInput, Failure, Outcome};

pub const EXAMPLES: &str = "\
Examples:
  wattline pki init --data-dir /var/lib/wattline --hosts mqtt.example.net,10.0.0.5
  wattline pki init --data-dir ./data

Creates DIR/pki/{ca,broker,https}.{pem,key} and DIR/master.key (keys mode 0600). A second
run changes nothing; a partly initialised directory is refused. Then enrol meters with
`wattline meter enroll ID --data-dir DIR`.";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Create the CA, the broker and HTTPS certificates and the master key.
    #[command(after_help = EXAMPLES)]
    Init(InitArgs),
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The server's data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Names and addresses meters and browsers use to reach the server (certificate SANs),
    /// comma-separated.
    #[arg(
        long,
        value_name = "H,...",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,::1"
    )]
    pub hosts: Vec<String>,
    /// The CA's common name.
    #[arg(long, value_name = "NAME", default_value = "wattline meter CA")]
    pub ca_name: String,
}

pub fn run(args: &Args) -> Outcome {
    match &args.action {
        Action::Init(a) => init(a),
    }
}

fn init(args: &InitArgs) -> Outcome {
    let files = PkiFiles::new(&args.data_dir);
    let hosts: Vec<String> = args
        .hosts
        .iter()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .collect();
    match files.init(&args.ca_name, &hosts) {
        Ok(InitOutcome::Created(paths)) => {
            println!("created the PKI of {}:", args.data_dir.display());
            for p in paths {
                println!("  {}", p.display());
            }
            println!("hosts: {}", hosts.join(", "));
            Ok(())
        }
        Ok(InitOutcome::AlreadyInitialised) => {
            println!(
                "{} is already initialised; nothing changed (the CA at {} is kept)",
                args.data_dir.display(),
                files.ca_cert().display()
            );
            Ok(())
        }
        Err(e) if matches!(e.kind(), server::ErrorKind::InvalidInput(_)) => {
            Err(anyhow!(e)).bad_input()
        }
        Err(e) => Err(Failure::Runtime(anyhow!(e))),
    }
}
