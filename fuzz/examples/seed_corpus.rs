//! Writes the seed corpus of every fuzz target, made by the real encoders, to
//! `corpus/<target>/seed-<n>` (relative to the `fuzz/` directory, or the directory given as the
//! first argument). Existing files are overwritten; other corpus files are kept.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("corpus"), PathBuf::from);
    let store = comet_store::fuzzing::TARGETS
        .iter()
        .map(|t| (t.name, (t.seeds)()));
    let broker = comet_broker::fuzzing::TARGETS
        .iter()
        .map(|t| (t.name, (t.seeds)()));
    let controller = comet_controller::fuzzing::TARGETS
        .iter()
        .map(|t| (t.name, (t.seeds)()));
    let targets = store.chain(broker).chain(controller);
    let mut total = 0;
    for (name, seeds) in targets {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), s)?;
        }
        total += seeds.len();
        println!("{name}: {} seeds", seeds.len());
    }
    println!("{total} seeds in {}", root.display());
    Ok(())
}
