//! `p2u bench`: placeholder replaced below.
use p2u::Result;
pub fn run(_args: &[String]) -> Result<()> { Ok(()) }
