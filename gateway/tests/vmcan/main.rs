//! Real-kernel SocketCAN tests: this binary boots a QEMU VM with Debian's kernel, its CAN
//! modules (can, can-raw, can-isotp, can-j1939, can-dev, vcan), busybox and a copy of itself,
//! and runs every case in [`cases::all`] inside it, in one boot. `docs/can-vm.md` explains the
//! harness, its cost, and how to add cases.
//!
//! `cargo test -p waymark-gateway --test vmcan [-- FILTER]` runs the cases whose name contains
//! FILTER. Outside the VM, `main` prepares and boots it; inside (`WAYMARK_VMCAN_INSIDE` set by
//! the VM's `/init`), it runs the cases and the exit code travels back on the serial console.

mod cases;
mod cpio;
mod host;

use std::process::ExitCode;
use std::time::Instant;

/// libtest options that take a value (so the value is not taken for a filter).
const VALUE_FLAGS: &[&str] = &["--test-threads", "--skip", "--format", "--color", "-Z"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        // libtest's listing format, for tools that enumerate tests first (no VM needed).
        for case in cases::all() {
            println!("{}: test", case.name);
        }
        return ExitCode::SUCCESS;
    }
    let filter = args
        .iter()
        .enumerate()
        .find(|(i, a)| {
            !a.starts_with('-') && (*i == 0 || !VALUE_FLAGS.contains(&args[i - 1].as_str()))
        })
        .map(|(_, a)| a.clone())
        .or_else(|| std::env::var("WAYMARK_VMCAN_FILTER").ok());
    if std::env::var_os("WAYMARK_VMCAN_INSIDE").is_some() {
        inside(filter.as_deref())
    } else {
        host::run(filter.as_deref())
    }
}

/// Runs the cases in order (a failing case does not stop the others); 0 when all passed.
fn inside(filter: Option<&str>) -> ExitCode {
    let all = cases::all();
    let mut failed = Vec::new();
    let mut ran = 0;
    for case in all
        .iter()
        .filter(|c| cases::SETUP.contains(&c.name) || filter.is_none_or(|f| c.name.contains(f)))
    {
        ran += 1;
        let t = Instant::now();
        let result = std::panic::catch_unwind(case.run)
            .unwrap_or_else(|p| Err(format!("panicked: {:?}", p.downcast_ref::<String>())));
        let ms = t.elapsed().as_millis();
        match result {
            Ok(()) => println!("test {} ... ok ({ms} ms)", case.name),
            Err(e) => {
                println!("test {} ... FAILED ({ms} ms): {e}", case.name);
                failed.push(case.name);
            }
        }
    }
    println!(
        "test result: {}. {} passed; {} failed; {ran} cases in one VM {failed:?}",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len()
    );
    if failed.is_empty() && ran > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
