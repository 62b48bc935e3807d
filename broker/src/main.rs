//! The `borges` command: `borges start` runs a broker; the other
//! subcommands are clients of a running one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use borges_broker::cli;
use borges_broker::config::{BrokerConfig, FileConfig, FlushMode};
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "borges",
    version,
    about = "A thread-per-core, Kafka-compatible commit-log broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a broker (defaults: 127.0.0.1:9092, data in ./borges-data, every core).
    Start(StartArgs),
    /// Create, delete, list, describe or alter topics.
    Topic {
        #[command(flatten)]
        target: cli::Target,
        #[command(subcommand)]
        command: cli::TopicCommand,
    },
    /// Send one record per line of stdin.
    Produce {
        #[command(flatten)]
        target: cli::Target,
        #[command(flatten)]
        args: cli::ProduceArgs,
    },
    /// Print records, one per line.
    Consume {
        #[command(flatten)]
        target: cli::Target,
        #[command(flatten)]
        args: cli::ConsumeArgs,
    },
    /// List, describe, reset or delete consumer groups.
    Group {
        #[command(flatten)]
        target: cli::Target,
        #[command(subcommand)]
        command: cli::GroupCommand,
    },
    /// Earliest and latest offset of every partition of a topic.
    Offsets {
        #[command(flatten)]
        target: cli::Target,
        topic: String,
    },
}

#[derive(Args, Debug)]
struct StartArgs {
    /// A TOML file of settings; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address clients are told to use (defaults to --listen).
    #[arg(long)]
    advertised: Option<SocketAddr>,
    /// A data directory (one per disk); repeat for several.
    #[arg(long = "data-dir")]
    data_dirs: Vec<PathBuf>,
    /// Number of shards, pinned to cores 0..N.
    #[arg(long)]
    cores: Option<usize>,
    #[arg(long)]
    node_id: Option<i32>,
    /// acks-all (fsync for acks=all only), every-batch, or never.
    #[arg(long)]
    flush: Option<FlushMode>,
    /// Largest request frame accepted, in bytes.
    #[arg(long)]
    max_frame_bytes: Option<usize>,
}

fn start(args: StartArgs) -> Result<(), String> {
    let mut config = BrokerConfig::default();
    if let Some(path) = &args.config {
        config
            .apply_file(FileConfig::load(path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    if let Some(v) = args.listen {
        config.listen = v;
        config.advertised = v;
    }
    if let Some(v) = args.advertised {
        config.advertised = v;
    }
    if !args.data_dirs.is_empty() {
        config.data_dirs = args.data_dirs;
    }
    if let Some(v) = args.cores {
        config.cores = v;
    }
    if let Some(v) = args.node_id {
        config.node_id = v;
    }
    if let Some(v) = args.flush {
        config.flush = v;
    }
    if let Some(v) = args.max_frame_bytes {
        config.max_frame_bytes = v;
        // The connection's budget must hold one whole frame and its
        // prefix: budgets left at their defaults grow to fit; budgets the
        // file set are the operator's, and a misfit is refused at start.
        let frame = v.saturating_add(borges_net::protocol::FRAME_PREFIX_LEN);
        let defaults = BrokerConfig::default();
        if config.max_inflight_bytes_per_connection == defaults.max_inflight_bytes_per_connection {
            config.max_inflight_bytes_per_connection = config.max_inflight_bytes_per_connection.max(frame);
        }
        if config.max_inflight_bytes_per_shard == defaults.max_inflight_bytes_per_shard {
            config.max_inflight_bytes_per_shard = config
                .max_inflight_bytes_per_shard
                .max(config.max_inflight_bytes_per_connection);
        }
    }
    let stop = borges_broker::server::stop_on_signals();
    borges_broker::server::run(config, stop).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BORGES_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a terminal: a journal or a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Start(a) => start(a),
        Command::Topic { target, command } => cli::topic(target, command),
        Command::Produce { target, args } => cli::produce(target, args),
        Command::Consume { target, args } => cli::consume(target, args),
        Command::Offsets { target, topic } => cli::offsets(target, topic),
        Command::Group { target, command } => cli::group(target, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("borges: {e}");
            ExitCode::FAILURE
        }
    }
}
