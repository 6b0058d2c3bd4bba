use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = latent_studio::cli::Cli::parse();
    match latent_studio::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
