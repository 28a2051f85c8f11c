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
    let done = |r: anyhow::Result<()>| r.map(|()| 0);
    let result: anyhow::Result<i32> = match &args.command {
        Command::Inject(a) => done(cli::inject(a).map(|out| print!("{out}"))),
        Command::Crd => done(cli::crd().map(|out| print!("{out}"))),
        Command::Certs(a) => done(runtime().and_then(|rt| rt.block_on(cli::certs(a)))),
        Command::Webhook(a) => done(runtime().and_then(|rt| rt.block_on(cli::webhook(a)))),
        Command::Controller(a) => done(runtime().and_then(|rt| rt.block_on(cli::controller(a)))),
        Command::Launcher(cli::LauncherCommand::Init(a)) => {
            done(runtime().and_then(|rt| rt.block_on(cli::launcher_init(a))))
        }
        Command::Launcher(cli::LauncherCommand::Serve(a)) => {
            done(runtime().and_then(|rt| rt.block_on(cli::launcher_serve(a))))
        }
        Command::Status(a) => done(
            runtime()
                .and_then(|rt| rt.block_on(cli::status(a)))
                .map(|out| print!("{out}")),
        ),
        Command::Cancel(a) => done(
            runtime()
                .and_then(|rt| rt.block_on(cli::cancel(a)))
                .map(|out| print!("{out}")),
        ),
        // `submit` exits with the run's exit code.
        Command::Submit(a) => runtime().and_then(|rt| rt.block_on(cli::submit(a))),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            // Distinct from any run's own exit codes of 1.
            ExitCode::from(if matches!(args.command, Command::Submit(_)) {
                2
            } else {
                1
            })
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
