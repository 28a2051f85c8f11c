use clap::Parser;
use runyard::cli::{self, Cli, Command, LogFormat};
use std::process::ExitCode;

// The webhook's per-review work is allocation-heavy (typed objects, JSON
// values); mimalloc roughly halves the allocator's share (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_tracing(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let args = Cli::parse();
    init_tracing(args.log_format, &args.log_level);
    let result = match &args.command {
        Command::Inject(a) => cli::inject(a).map(|out| print!("{out}")),
        Command::Crd => cli::crd().map(|out| print!("{out}")),
        Command::Certs(a) => runtime().and_then(|rt| rt.block_on(cli::certs(a))),
        Command::Webhook(a) => runtime().and_then(|rt| rt.block_on(cli::webhook(a))),
        Command::Controller(a) => runtime().and_then(|rt| rt.block_on(cli::controller(a))),
        Command::Launcher(cli::LauncherCommand::Init(a)) => {
            runtime().and_then(|rt| rt.block_on(cli::launcher_init(a)))
        }
        Command::Launcher(cli::LauncherCommand::Serve(a)) => {
            runtime().and_then(|rt| rt.block_on(cli::launcher_serve(a)))
        }
        Command::Status(a) => runtime()
            .and_then(|rt| rt.block_on(cli::status(a)))
            .map(|out| print!("{out}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
