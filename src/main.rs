use clap::Parser;
use runyard::cmd::{self, Cli, LogFormat};
use std::process::ExitCode;

// The webhook's per-review work is allocation-heavy (typed objects, JSON
// values); mimalloc roughly halves the allocator's share (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_tracing(cli: &Cli) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(cmd::log_filter(cli))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = cmd::log_colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    match cmd::run(&cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {}", cmd::errors::error_line(&e));
            ExitCode::from(u8::try_from(cmd::failure_code(&cli)).unwrap_or(1))
        }
    }
}
