//! The `ssh-tpm-ca` command line: `init`, `serve`, `device …`, `audit`, `krl`. The binary
//! parses [`Args`], sets up logging and calls [`run`].

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args as ClapArgs, Parser, Subcommand};

use crate::config::{Config, DEFAULT_VALIDITY_SECS};
use crate::error::CaError;
use crate::store::{SqliteStore, Store};

/// The ssh-tpm certificate authority: enrols TPM devices and issues short-lived SSH user
/// certificates to TPM-born keys (docs/ca.md).
#[derive(Debug, Parser)]
#[command(name = "ssh-tpm-ca", version)]
pub struct Args {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "SSH_TPM_CA_CONFIG",
        default_value = "ca.toml"
    )]
    pub config: PathBuf,
    /// Log every request at debug level.
    #[arg(short, long, global = true)]
    pub debug: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write ca.toml and a new Ed25519 CA key (ca_key, ca_key.pub); never overwrites.
    Init(InitArgs),
    /// Run the HTTP API.
    Serve,
    /// Manage the device inventory.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// List every issuance (with its evidence) and every refusal (with its reason).
    Audit {
        /// Print one JSON document instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Write an OpenSSH KRL revoking the live certificates of retired devices.
    Krl {
        /// Where to write it (sshd_config RevokedKeys).
        #[arg(long)]
        out: PathBuf,
        /// Also revoke this serial (repeatable).
        #[arg(long = "serial", value_name = "N")]
        serials: Vec<u64>,
    },
}

/// `init` options.
#[derive(Debug, ClapArgs)]
pub struct InitArgs {
    /// Directory for ca.toml, ca_key and ca_key.pub.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: String,
    /// The OpenID provider's issuer URL.
    #[arg(long, default_value = "https://idp.example")]
    pub issuer: String,
    /// Our client id at the provider.
    #[arg(long, default_value = "ssh-tpm")]
    pub client_id: String,
    /// The ID-token claim that names the user.
    #[arg(long, default_value = "email")]
    pub user_claim: String,
    /// The device-management system's base URL.
    #[arg(long, default_value = "https://mdm.example/ssh-tpm")]
    pub compliance_url: String,
    /// A PEM file of TPM manufacturer root certificates (repeatable).
    #[arg(long = "ek-root", value_name = "FILE")]
    pub ek_roots: Vec<PathBuf>,
    /// Certificate lifetime in seconds (at most 86400).
    #[arg(long, default_value_t = DEFAULT_VALIDITY_SECS)]
    pub validity_secs: u64,
}

/// `device` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Add a device by its EK certificate (DER or PEM); prints its id.
    Add {
        /// The EK certificate file.
        #[arg(long, value_name = "FILE")]
        ek_cert: PathBuf,
        /// The user it belongs to (the value of the configured ID-token claim).
        #[arg(long, value_name = "SUBJECT")]
        user: String,
        /// A name for people.
        #[arg(long)]
        name: Option<String>,
        /// An allowed SHA-256 PCR value, INDEX=HEX (repeatable, also for one index).
        #[arg(long = "pcr", value_name = "INDEX=HEX")]
        pcrs: Vec<String>,
    },
    /// List the devices.
    List,
    /// Retire a device: no more enrolment or certificates.
    Retire {
        /// The device id.
        id: String,
    },
    /// Replace a device's allowed PCR values (no --pcr clears the policy).
    Policy {
        /// The device id.
        id: String,
        /// An allowed SHA-256 PCR value, INDEX=HEX (repeatable, also for one index).
        #[arg(long = "pcr", value_name = "INDEX=HEX")]
        pcrs: Vec<String>,
    },
}

impl Args {
    /// The log level the arguments ask for.
    pub fn log_level(&self) -> tracing::Level {
        if self.debug {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        }
    }
}

/// Runs the command, printing its output to stdout.
///
/// # Errors
///
/// [`CaError`], for the binary to print.
pub fn run(args: Args) -> Result<(), CaError> {
    run_to(args, &mut std::io::stdout().lock())
}

/// Runs the command, writing its output to `out`.
///
/// A reader that has gone away (`ssh-tpm-ca audit | head`) is not an error: the output is
/// simply no longer wanted, and the command ends as if it had written everything.
///
/// # Errors
///
/// [`CaError`], for the binary to print; [`CaError::Output`] when `out` fails otherwise.
pub fn run_to(args: Args, out: &mut dyn Write) -> Result<(), CaError> {
    let text = run_command(args)?;
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CaError::Output(e)),
        _ => Ok(()),
    }
}

/// Runs the command; returns what it prints on stdout.
fn run_command(args: Args) -> Result<String, CaError> {
    if let Command::Init(init) = &args.command {
        return run_init(init);
    }
    let config = Config::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CaError::Setup(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(run_async(args.command, config))
}

fn run_init(a: &InitArgs) -> Result<String, CaError> {
    let created = crate::init::init(&crate::init::InitOptions {
        dir: a.dir.clone(),
        listen: a.listen.clone(),
        issuer: a.issuer.clone(),
        client_id: a.client_id.clone(),
        user_claim: a.user_claim.clone(),
        compliance_url: a.compliance_url.clone(),
        ek_roots: a.ek_roots.clone(),
        validity_secs: a.validity_secs,
    })?;
    Ok(format!(
        "wrote {}\nwrote {} (keep it secret)\nwrote {}\n\
         CA public key, for sshd's TrustedUserCAKeys:\n{}\n",
        created.config.display(),
        created.key.display(),
        created.public_key.display(),
        created.public_key_line
    ))
}

async fn open_store(config: &Config) -> Result<Arc<dyn Store>, CaError> {
    Ok(Arc::new(SqliteStore::open(&config.database_url).await?))
}

async fn run_async(command: Command, config: Config) -> Result<String, CaError> {
    match command {
        Command::Init(_) => Err(CaError::Usage("init runs without a configuration".into())),
        Command::Serve => crate::serve::run(config).await.map(|()| String::new()),
        Command::Device(d) => run_device(d, &config).await,
        Command::Audit { json } => {
            let store = open_store(&config).await?;
            if json {
                let doc = crate::audit::audit_json(store.as_ref()).await?;
                Ok(format!("{doc:#}\n"))
            } else {
                crate::audit::audit_text(store.as_ref()).await
            }
        }
        Command::Krl { out, serials } => {
            let ca = crate::serve::load_ca_key(&config.ca_key)?;
            let store = open_store(&config).await?;
            let revoked =
                crate::audit::write_krl(store.as_ref(), ca.public_key(), &serials, &out).await?;
            Ok(format!(
                "wrote {} revoking {} certificate(s)\n",
                out.display(),
                revoked.len()
            ))
        }
    }
}

async fn run_device(command: DeviceCommand, config: &Config) -> Result<String, CaError> {
    let store = open_store(config).await?;
    let store = store.as_ref();
    match command {
        DeviceCommand::Add {
            ek_cert,
            user,
            name,
            pcrs,
        } => {
            let bytes =
                std::fs::read(&ek_cert).map_err(|e| CaError::io("cannot read", &ek_cert, e))?;
            let cert = crate::inventory::read_ek_cert(&bytes)
                .map_err(|e| CaError::Usage(format!("{}: {e}", ek_cert.display())))?;
            let policy = crate::inventory::parse_pcrs(&pcrs)?;
            let anchors = match crate::serve::load_anchors(&config.ek_roots) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("warning: {e}");
                    ssh_tpm_attest::ekcert::TrustAnchors::new()
                }
            };
            let added =
                crate::inventory::add(store, &cert, &anchors, &user, name.as_deref(), &policy)
                    .await?;
            match &added.untrusted {
                None => eprintln!("the EK certificate chains to a configured root"),
                Some(why) => eprintln!(
                    "warning: the EK certificate does not chain to a configured root ({why}); \
                     enrolment will be refused until its manufacturer's root is in ek_roots"
                ),
            }
            Ok(format!("{}\n", added.device_id))
        }
        DeviceCommand::List => crate::inventory::list(store).await,
        DeviceCommand::Retire { id } => {
            crate::inventory::retire(store, &id).await?;
            eprintln!(
                "retired {id}; run `ssh-tpm-ca krl --out FILE` to revoke its live certificates"
            );
            Ok(String::new())
        }
        DeviceCommand::Policy { id, pcrs } => {
            let policy = crate::inventory::parse_pcrs(&pcrs)?;
            crate::inventory::set_policy(store, &id, &policy).await?;
            if policy.0.is_empty() {
                eprintln!("cleared the PCR policy of {id}");
            } else {
                eprintln!("set the PCR policy of {id} ({} PCRs)", policy.0.len());
            }
            Ok(String::new())
        }
    }
}
