//! `mesher …`, in both binaries (`clan mesher …` on the admin's machine, `clan-agent mesher …`
//! on clan machines, where the data-mesher unit runs the daemon): the Data Mesher daemon
//! (`run`, which only reads `dm.toml` and hands it to `clan_mesher::Mesher`), key and
//! certificate tools, and file commands that sign locally and talk to the running daemon
//! through `clan_mesher::client::Client`. Each command returns an [`Output`]; the binary
//! prints it through its own printer ([`Print`]), so `-q` and `--json` mean the same as
//! elsewhere.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clan_mesher::client::{Client, FileEntry, Status};
use clan_mesher::record::unix_micros_now;
use clan_mesher::{Certificate, Config, FileName, Mesher, PublicKey, Record, SecretKey};
use clap::Subcommand;

use crate::report;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: MesherCommand,
}

#[derive(Subcommand)]
enum MesherCommand {
    /// Run the daemon until SIGINT or SIGTERM.
    #[command(after_help = "Example:
  clan mesher run --config dm.toml")]
    Run(ConfigArg),
    /// Create a key file (0600) and print its public half.
    #[command(subcommand)]
    Generate(GenerateCommand),
    /// Peer identities.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Membership certificates, signed by the network key.
    #[command(subcommand)]
    Certificate(CertificateCommand),
    /// Publish, delete, read and list files through the running daemon.
    #[command(subcommand)]
    File(FileCommand),
    /// Show the running daemon's peer id, addresses, peers and counters.
    #[command(after_help = "Examples:
  clan mesher status
  clan mesher status --json --config dm.toml")]
    Status(ListArgs),
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The daemon's configuration.
    #[arg(
        long,
        env = "CLAN_MESHER_CONFIG",
        default_value = "/etc/data-mesher/dm.toml"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum GenerateCommand {
    /// The network key; its public half is the network id.
    #[command(after_help = "Example:
  clan mesher generate network --out network.key")]
    Network(OutArg),
    /// A node identity key; prints its peer id.
    #[command(after_help = "Example:
  clan mesher generate identity-key --out node.key")]
    IdentityKey(OutArg),
    /// A file signing key for `[network.files]`.
    #[command(after_help = "Example:
  clan mesher generate signing-key --out admin.key")]
    SigningKey(OutArg),
}

#[derive(clap::Args)]
struct OutArg {
    /// Where to write the key; refuses to overwrite.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Print the libp2p peer id of an identity key.
    #[command(after_help = "Example:
  clan mesher peer id --identity-key node.key")]
    Id {
        /// The node's identity key file.
        #[arg(long)]
        identity_key: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertificateCommand {
    /// Admit a node to the network.
    #[command(after_help = "Example:
  clan mesher certificate sign --network-key network.key --identity-key node.key \\
      --valid-for 365d --out node.cert")]
    Sign {
        /// The network key file (`clan mesher generate network`).
        #[arg(long)]
        network_key: PathBuf,
        #[command(flatten)]
        subject: Subject,
        /// How long the certificate is valid (e.g. `365d`); forever when absent.
        #[arg(long)]
        valid_for: Option<String>,
        /// Where to write the certificate.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a certificate against a network id (and a node).
    #[command(after_help = "Example:
  clan mesher certificate verify --certificate node.cert --identity-key node.key \\
      --network-id dRBujf1yLwbdL60GnlRrc5NKHwhCvz1wHV46elX7ALY   # printed by `generate network`")]
    Verify {
        /// The network id (the network key's public half).
        #[arg(long)]
        network_id: PublicKey,
        /// The certificate file.
        #[arg(long)]
        certificate: PathBuf,
        #[command(flatten)]
        subject: OptionalSubject,
    },
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Subject {
    /// The node's identity key file (only its public half is used).
    #[arg(long)]
    identity_key: Option<PathBuf>,
    /// The node's identity public key (base64url).
    #[arg(long)]
    public_key: Option<PublicKey>,
}

#[derive(clap::Args)]
#[group(required = false, multiple = false)]
struct OptionalSubject {
    /// Check it certifies this node: its identity key file (only its public half is used).
    #[arg(long)]
    identity_key: Option<PathBuf>,
    /// Check it certifies this node: its identity public key (base64url).
    #[arg(long)]
    public_key: Option<PublicKey>,
}

#[derive(Subcommand)]
enum FileCommand {
    /// Sign a new version of a file and hand it to the daemon.
    #[command(after_help = "Examples:
  clan mesher file update zone zone.txt --signing-key admin.key
  echo hello | clan mesher file update greeting - --signing-key admin.key --valid-for 1h")]
    Update {
        /// The file's name in the network.
        name: FileName,
        /// The content; `-` for stdin.
        path: PathBuf,
        #[command(flatten)]
        signing: Signing,
        /// Remove the file everywhere after this long (e.g. `1h`).
        #[arg(long)]
        valid_for: Option<String>,
    },
    /// Sign the deletion of a file.
    #[command(after_help = "Example:
  clan mesher file delete zone --signing-key admin.key")]
    Delete {
        /// The file's name.
        name: FileName,
        #[command(flatten)]
        signing: Signing,
    },
    /// Print a file's content.
    #[command(after_help = "Example:
  clan mesher file get zone")]
    Get {
        /// The file's name.
        name: FileName,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List current files.
    #[command(after_help = "Examples:
  clan mesher file list
  clan mesher file list --json")]
    List(ListArgs),
}

#[derive(clap::Args)]
struct Signing {
    /// The signing key (for a signed namespace: the node's identity key).
    #[arg(long)]
    signing_key: PathBuf,
    /// Attach this certificate (needed for signed-namespace files).
    #[arg(long)]
    certificate: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(clap::Args)]
struct ListArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// What a mesher command produced.
#[derive(Debug)]
pub enum Output {
    /// The daemon ran until it was stopped.
    Stopped,
    /// Data for stdout: a public key, a peer id, a valid certificate.
    Data(String),
    /// A file's content, unchanged.
    Content(Vec<u8>),
    /// What was done, for stderr.
    Done(String),
    /// A check that failed (exit 1), and why.
    Invalid(String),
    /// The current files.
    Files { files: Vec<FileEntry>, json: bool },
    /// The daemon's state.
    Status { report: StatusReport, json: bool },
}

/// The daemon's state and, when it has no peers, why.
#[derive(Debug, serde::Serialize)]
pub struct StatusReport {
    #[serde(flatten)]
    pub status: Status,
    pub no_peers: Option<String>,
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = &self.status;
        writeln!(f, "peer id: {}", status.peer_id)?;
        for address in &status.listen_addrs {
            writeln!(f, "listening: {address}")?;
        }
        writeln!(f, "peers: {}", status.peers.len())?;
        if let Some(reason) = &self.no_peers {
            writeln!(f, "no peers: {reason}")?;
        }
        writeln!(f, "files: {}", status.files)?;
        write!(
            f,
            "accepted: {}, fetches: {}",
            status.accepted, status.fetches
        )
    }
}

/// A binary's printer, as mesher results need it: data on stdout, notes on stderr.
pub trait Print {
    /// One line of data on stdout.
    fn data(&self, line: &dyn fmt::Display) -> anyhow::Result<()>;
    /// Bytes on stdout, as they are.
    fn content(&self, bytes: &[u8]) -> anyhow::Result<()>;
    /// A JSON document on stdout.
    fn json(&self, value: &serde_json::Value) -> anyhow::Result<()>;
    /// What was done, on stderr (not when quiet).
    fn note(&self, line: &dyn fmt::Display);
    /// What failed, on stderr (always).
    fn failure(&self, line: &dyn fmt::Display);
}

impl Output {
    /// Prints the result through `printer`; the command's exit status.
    pub fn print(&self, printer: &dyn Print) -> anyhow::Result<ExitCode> {
        match self {
            Output::Stopped => {}
            Output::Data(line) => printer.data(line)?,
            Output::Content(bytes) => printer.content(bytes)?,
            Output::Done(line) => printer.note(line),
            Output::Invalid(reason) => {
                printer.failure(&format_args!("invalid: {reason}"));
                return Ok(ExitCode::from(clan_error::Exit::Failed.code()));
            }
            Output::Files { files, json: true } => printer.json(&serde_json::to_value(files)?)?,
            Output::Files { files, json: false } => {
                for file in files {
                    printer.data(&format_args!(
                        "{}\t{}\t{} bytes\tsigned {}",
                        file.name,
                        file.kind,
                        file.size,
                        report::local_time(micros_to_seconds(file.signed_at))
                    ))?;
                }
            }
            Output::Status { report, json: true } => {
                printer.json(&serde_json::to_value(report)?)?
            }
            Output::Status {
                report,
                json: false,
            } => printer.data(report)?,
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Runs a mesher command.
pub fn run(args: Args) -> anyhow::Result<Output> {
    match args.command {
        MesherCommand::Run(args) => daemon(&args.config),
        MesherCommand::Generate(command) => generate(command),
        MesherCommand::Peer(PeerCommand::Id { identity_key }) => {
            let key = SecretKey::read(&identity_key)?;
            Ok(Output::Data(
                key.to_libp2p().public().to_peer_id().to_string(),
            ))
        }
        MesherCommand::Certificate(command) => certificate(command),
        MesherCommand::File(command) => file(command),
        MesherCommand::Status(args) => status(&args),
    }
}

fn daemon(config_path: &Path) -> anyhow::Result<Output> {
    let config = Config::load(config_path)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| {
            tracing_subscriber::EnvFilter::try_new(format!("clan_mesher={}", config.log_level))
        })
        .with_context(|| format!("invalid log_level `{}`", config.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let settings = config.settings()?;
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    runtime.block_on(async {
        let mesher = Mesher::spawn(settings).await?;
        let status = mesher.handle().status().await;
        if let Some(status) = status {
            for address in &status.listen_addrs {
                tracing::info!("listening on {address}/p2p/{}", status.peer_id);
            }
        }
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let handle = mesher.handle();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
            _ = wait_stopped(handle) => {}
        }
        mesher.shutdown();
        mesher.join().await?;
        anyhow::Ok(Output::Stopped)
    })
}

/// Resolves when the node's event loop has ended on its own.
async fn wait_stopped(handle: clan_mesher::Handle) {
    let mut changes = handle.changes();
    while changes.changed().await.is_ok() {}
}

fn generate(command: GenerateCommand) -> anyhow::Result<Output> {
    let (out, print_peer_id) = match &command {
        GenerateCommand::Network(arg) | GenerateCommand::SigningKey(arg) => (&arg.out, false),
        GenerateCommand::IdentityKey(arg) => (&arg.out, true),
    };
    if out.exists() {
        return Err(report::hinted(
            format!("`{}` already exists", out.display()),
            "remove it first if you really mean to replace the key",
        ));
    }
    let key = SecretKey::generate();
    key.write(out)?;
    Ok(Output::Data(if print_peer_id {
        key.to_libp2p().public().to_peer_id().to_string()
    } else {
        key.public().to_string()
    }))
}

fn subject_key(
    identity_key: Option<&PathBuf>,
    public_key: Option<PublicKey>,
) -> anyhow::Result<Option<PublicKey>> {
    Ok(match (identity_key, public_key) {
        (Some(path), _) => Some(SecretKey::read(path)?.public()),
        (None, key) => key,
    })
}

fn parse_validity(text: Option<&String>) -> anyhow::Result<Option<u64>> {
    let Some(text) = text else { return Ok(None) };
    let duration = clan_mesher::config::parse_duration(text).ok_or_else(|| {
        report::hinted(
            format!("invalid duration `{text}`"),
            "write e.g. `90s`, `30m`, `12h` or `365d`",
        )
    })?;
    let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    Ok(Some(unix_micros_now().saturating_add(micros)))
}

fn certificate(command: CertificateCommand) -> anyhow::Result<Output> {
    match command {
        CertificateCommand::Sign {
            network_key,
            subject,
            valid_for,
            out,
        } => {
            let network_key = SecretKey::read(&network_key)?;
            let subject = subject_key(subject.identity_key.as_ref(), subject.public_key)?
                .context("no subject given")?;
            let certificate = Certificate::sign(
                &network_key,
                subject,
                unix_micros_now(),
                parse_validity(valid_for.as_ref())?,
            );
            certificate.write(&out)?;
            Ok(Output::Done(format!(
                "certified node {subject} in network {}",
                network_key.public()
            )))
        }
        CertificateCommand::Verify {
            network_id,
            certificate,
            subject,
        } => {
            let certificate = Certificate::read(&certificate)?;
            let now = unix_micros_now();
            let result = match subject_key(subject.identity_key.as_ref(), subject.public_key)? {
                Some(subject) => certificate.verify_for(&network_id, &subject, now),
                None => certificate.verify(&network_id, now),
            };
            Ok(match result {
                Ok(()) => Output::Data(format!(
                    "valid: node {} in network {network_id}",
                    certificate.subject
                )),
                Err(error) => Output::Invalid(error.to_string()),
            })
        }
    }
}

fn sign_and_send(
    signing: &Signing,
    make: impl FnOnce(&SecretKey, &Config) -> Record,
    content: &[u8],
) -> anyhow::Result<Output> {
    let config = Config::load(&signing.config.config)?;
    let key = SecretKey::read(&signing.signing_key)?;
    let mut record = make(&key, &config);
    if let Some(path) = &signing.certificate {
        record = record.with_certificate(Certificate::read(path)?);
    }
    Client::new(&config)?.publish(&record, content)?;
    Ok(Output::Done(format!(
        "accepted `{}` (signed at {})",
        record.name, record.signed_at
    )))
}

fn file(command: FileCommand) -> anyhow::Result<Output> {
    match command {
        FileCommand::Update {
            name,
            path,
            signing,
            valid_for,
        } => {
            let content = read_content(&path)?;
            let valid_until = parse_validity(valid_for.as_ref())?;
            sign_and_send(
                &signing,
                |key, config| {
                    Record::sign_update(
                        key,
                        config.policy.network,
                        name,
                        &content,
                        unix_micros_now(),
                        valid_until,
                    )
                },
                &content,
            )
        }
        FileCommand::Delete { name, signing } => sign_and_send(
            &signing,
            |key, config| {
                Record::sign_tombstone(key, config.policy.network, name, unix_micros_now())
            },
            &[],
        ),
        FileCommand::Get { name, config } => {
            let config = Config::load(&config.config)?;
            Ok(Output::Content(Client::new(&config)?.get(&name)?))
        }
        FileCommand::List(args) => {
            let config = Config::load(&args.config.config)?;
            Ok(Output::Files {
                files: Client::new(&config)?.files()?,
                json: args.json,
            })
        }
    }
}

/// Mesher times are microseconds since the epoch.
fn micros_to_seconds(micros: u64) -> i64 {
    i64::try_from(micros / 1_000_000).unwrap_or(i64::MAX)
}

fn read_content(path: &Path) -> anyhow::Result<Vec<u8>> {
    let limit = clan_mesher::record::MAX_FILE_SIZE;
    let mut content = Vec::new();
    if path == Path::new("-") {
        std::io::stdin().take(limit + 1).read_to_end(&mut content)?;
    } else {
        std::fs::File::open(path)
            .and_then(|file| file.take(limit + 1).read_to_end(&mut content))
            .with_context(|| format!("failed to read `{}`", path.display()))?;
    }
    if content.len() as u64 > limit {
        return Err(report::hinted(
            format!("`{}` is larger than 10 MiB", path.display()),
            "Data Mesher is for small files; publish a reference (a URL or a hash) instead",
        ));
    }
    Ok(content)
}

fn status(args: &ListArgs) -> anyhow::Result<Output> {
    let config = Config::load(&args.config.config)?;
    let client = Client::new(&config)?;
    let status = client.status()?;
    let no_peers = status
        .peers
        .is_empty()
        .then(|| client.why_no_peers(&status));
    Ok(Output::Status {
        report: StatusReport { status, no_peers },
        json: args.json,
    })
}
