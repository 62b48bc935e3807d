//! The `borges` command: `borges start` runs a broker; the other
//! subcommands are clients of a running one.

use std::ffi::OsString;
use std::process::ExitCode;

mod client;

use borges_broker::config::StartArgs;
use clap::{Parser, Subcommand};
use client as cli;

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
    Start(Box<StartArgs>),
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
    /// Describe the cluster: its brokers and their states, and the controller.
    Cluster {
        #[command(flatten)]
        target: cli::Target,
        #[command(subcommand)]
        command: cli::ClusterCommand,
    },
    /// Leader elections.
    Leader {
        #[command(flatten)]
        target: cli::Target,
        #[command(subcommand)]
        command: cli::LeaderCommand,
    },
    /// Earliest and latest offset of every partition of a topic.
    Offsets {
        #[command(flatten)]
        target: cli::Target,
        topic: String,
    },
}

/// `borges start`: every setting from defaults < `--config` file <
/// environment < flags (see borges_broker::config).
fn start() -> Result<(), String> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    // What follows the subcommand: `borges` takes no flags of its own
    // before it (clap has already checked the whole line).
    let at = argv
        .iter()
        .position(|a| a == "start")
        .ok_or("no start subcommand")?;
    let config = StartArgs::resolve(&argv[at + 1..]).map_err(|e| e.to_string())?;
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
        Command::Start(_) => start(),
        Command::Topic { target, command } => cli::topic(target, command),
        Command::Produce { target, args } => cli::produce(target, args),
        Command::Consume { target, args } => cli::consume(target, args),
        Command::Offsets { target, topic } => cli::offsets(target, topic),
        Command::Group { target, command } => cli::group(target, command),
        Command::Cluster { target, command } => cli::cluster(target, command),
        Command::Leader { target, command } => cli::leader(target, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("borges: {e}");
            ExitCode::FAILURE
        }
    }
}
