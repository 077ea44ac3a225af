//! Writes the seed corpora: `gen-seeds OUT_DIR [TARGET...]` creates
//! `OUT_DIR/<target>/seed-NNN` for every (or each named) target.
//! `gen-seeds --list` prints the target names, one a line.
#![forbid(unsafe_code)]

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{Context, bail};
use gatehouse_fuzz::{Target, seeds};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(first) = args.next() else {
        bail!("usage: gen-seeds OUT_DIR [TARGET...] | gen-seeds --list");
    };
    if first == "--list" {
        for t in Target::ALL {
            println!("{}", t.name());
        }
        return Ok(());
    }
    let out = PathBuf::from(first);
    let names: Vec<String> = args.collect();
    let targets: Vec<Target> = if names.is_empty() {
        Target::ALL.to_vec()
    } else {
        names
            .iter()
            .map(|n| {
                Target::from_name(n)
                    .with_context(|| format!("unknown target {n:?}; `gen-seeds --list` names them"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    for t in targets {
        let dir = out.join(t.name());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let seeds = seeds(t);
        for (i, s) in seeds.iter().enumerate() {
            let path = dir.join(format!("seed-{i:03}"));
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(s))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        println!("{}: {} seeds in {}", t.name(), seeds.len(), dir.display());
    }
    Ok(())
}
