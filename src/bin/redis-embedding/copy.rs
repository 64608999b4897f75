//! `copy`: (being written).

use std::process::ExitCode;

use redis_embedding::Error;

use crate::Ctx;

/// Arguments of `copy`.
#[derive(clap::Args)]
pub struct Args {}

/// Not written yet.
pub fn run(_ctx: &Ctx, _a: Args) -> Result<ExitCode, Error> {
    Err(Error::invalid("copy: not built yet"))
}
