//! The host side: fetch Debian's kernel and CAN modules (cached), build an initramfs holding
//! busybox, the modules and this very test binary (with its shared libraries), boot it under
//! QEMU, relay the serial console, and return the exit code the VM reports.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::cpio::Cpio;

/// The modules to load, in dependency order (no `modules.dep` in the initramfs).
pub const MODULES: &[&str] = &[
    "can",
    "can-raw",
    "can-isotp",
    "can-j1939",
    "can-dev",
    "vcan",
];
/// The marker line the VM's `/init` prints with the test binary's exit code.
pub const EXIT_MARKER: &str = "WAYMARK-VMCAN-EXIT=";
/// The marker line `/init` prints as soon as it runs (boot time = until this line).
pub const INIT_MARKER: &str = "WAYMARK-VMCAN-INIT";
/// Longest run of the whole VM before it is killed.
const VM_TIMEOUT: Duration = Duration::from_secs(300);

type Result<T> = std::result::Result<T, String>;

/// Runs every case inside a VM; the process exit code is the VM's.
pub fn run(filter: Option<&str>) -> ExitCode {
    let started = Instant::now();
    match boot(filter, started) {
        Ok(code) => {
            println!(
                "vmcan: whole harness took {:.1} s",
                started.elapsed().as_secs_f64()
            );
            ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("vmcan: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vmcan")
}

fn boot(filter: Option<&str>, started: Instant) -> Result<u8> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let kernel = kernel_files(&cache)?;
    let prepared = Instant::now();
    let initrd = cache.join(format!("initrd-{}.cpio", std::process::id()));
    build_initramfs(&initrd, &kernel)?;
    println!(
        "vmcan: kernel ready in {:.1} s, initramfs in {:.1} s",
        prepared.duration_since(started).as_secs_f64(),
        prepared.elapsed().as_secs_f64()
    );
    let result = run_qemu(&kernel.vmlinuz, &initrd, filter);
    if let Err(e) = std::fs::remove_file(&initrd) {
        eprintln!("vmcan: cannot remove {}: {e}", initrd.display());
    }
    result
}

/// The kernel image and module files of one Debian kernel package.
struct Kernel {
    vmlinuz: PathBuf,
    modules: Vec<(String, PathBuf)>,
}

fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The versioned package `linux-image-amd64` depends on (e.g. `linux-image-6.1.0-56-amd64`).
fn kernel_package() -> Result<String> {
    let deps = sh(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .ok_or_else(|| {
            "apt-cache knows no linux-image-amd64 dependency (run `apt-get update`)".into()
        })
}

/// `vmlinuz` and the CAN modules, from the cache or fetched with `apt-get download` and
/// unpacked with `dpkg-deb -x` (only the needed files are kept).
fn kernel_files(cache: &Path) -> Result<Kernel> {
    let pkg = match kernel_package() {
        Ok(p) => p,
        // Offline with an earlier download: use what the cache has.
        Err(e) => newest_cached(cache).ok_or(e)?,
    };
    let dir = cache.join(&pkg);
    let kernel = Kernel {
        vmlinuz: dir.join("vmlinuz"),
        modules: MODULES
            .iter()
            .map(|m| (m.to_string(), dir.join(format!("{m}.ko"))))
            .collect(),
    };
    if kernel.vmlinuz.exists() && kernel.modules.iter().all(|(_, p)| p.exists()) {
        return Ok(kernel);
    }
    println!(
        "vmcan: fetching {pkg} (once; cached in {})",
        cache.display()
    );
    sh(Command::new("apt-get")
        .args(["download", "-q", &pkg])
        .current_dir(cache))?;
    let deb = std::fs::read_dir(cache)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
        })
        .ok_or_else(|| format!("apt-get download left no {pkg}_*.deb"))?;
    let unpack = cache.join(format!("{pkg}.unpack"));
    if unpack.exists()
        && let Err(e) = std::fs::remove_dir_all(&unpack)
    {
        eprintln!("vmcan: cannot remove {}: {e}", unpack.display());
    }
    sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpack))?;
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let boot = find(&unpack.join("boot"), |n| n.starts_with("vmlinuz-"))
        .ok_or("no boot/vmlinuz-* in the package")?;
    std::fs::copy(&boot, &kernel.vmlinuz).map_err(|e| e.to_string())?;
    for (m, dest) in &kernel.modules {
        let name = format!("{m}.ko");
        let src = find(&unpack.join("lib/modules"), |n| n == name)
            .or_else(|| find(&unpack.join("usr/lib/modules"), |n| n == name))
            .ok_or_else(|| format!("no {name} in the package"))?;
        std::fs::copy(&src, dest).map_err(|e| e.to_string())?;
    }
    if let Err(e) = std::fs::remove_dir_all(&unpack) {
        eprintln!("vmcan: cannot remove {}: {e}", unpack.display());
    }
    if let Err(e) = std::fs::remove_file(&deb) {
        eprintln!("vmcan: cannot remove {}: {e}", deb.display());
    }
    Ok(kernel)
}

fn newest_cached(cache: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("vmlinuz").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names.pop()
}

/// The first file under `dir` (recursively) whose name satisfies `pred`.
fn find(dir: &Path, pred: impl Fn(&str) -> bool + Copy) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() {
            if let Some(p) = find(&path, pred) {
                return Some(p);
            }
        } else if entry.file_name().to_str().is_some_and(pred) {
            return Some(path);
        }
    }
    None
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t tmpfs tmpfs /tmp
/bin/busybox --install -s /bin
export PATH=/bin
echo WAYMARK-VMCAN-INIT
for m in MODULES; do insmod /lib/modules/$m.ko || echo "vmcan: insmod $m failed"; done
ip link set lo up
export WAYMARK_VMCAN_INSIDE=1 HOME=/tmp TMPDIR=/tmp RUST_BACKTRACE=1
/vmcan-test
echo "WAYMARK-VMCAN-EXIT=$?"
poweroff -f
"#;

/// Writes the initramfs: busybox, `/init`, the modules, this binary and its libraries.
fn build_initramfs(path: &Path, kernel: &Kernel) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // `ldd` succeeds only on a dynamic executable; /init needs a static busybox.
    if Command::new("ldd")
        .arg("/bin/busybox")
        .output()
        .map_err(|e| format!("ldd: {e}"))?
        .status
        .success()
    {
        return Err("/bin/busybox is dynamically linked: install busybox-static".into());
    }
    let mut c = Cpio::default();
    for d in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "etc",
        "lib",
        "lib/modules",
    ] {
        c.dir(d);
    }
    c.file_from("bin/busybox", Path::new("/bin/busybox"), 0o755)?;
    c.file(
        "init",
        INIT.replace("MODULES", &MODULES.join(" ")).as_bytes(),
        0o755,
    );
    c.file("etc/hosts", b"127.0.0.1 localhost\n::1 localhost\n", 0o644);
    c.file("etc/nsswitch.conf", b"hosts: files\n", 0o644);
    c.file("etc/passwd", b"root:x:0:0:root:/tmp:/bin/sh\n", 0o644);
    for (m, p) in &kernel.modules {
        c.file_from(&format!("lib/modules/{m}.ko"), p, 0o644)?;
    }
    // The debug binary is ~130 MB, mostly DWARF; without it (symbols kept for backtraces)
    // the initramfs is a tenth of the size and the VM boots several seconds sooner.
    let stripped = path.with_extension("bin");
    let lean = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(&exe)
        .status()
        .is_ok_and(|s| s.success());
    c.file_from("vmcan-test", if lean { &stripped } else { &exe }, 0o755)?;
    if lean && let Err(e) = std::fs::remove_file(&stripped) {
        eprintln!("vmcan: cannot remove {}: {e}", stripped.display());
    }
    for lib in shared_libraries(&exe)? {
        let rel = lib.to_string_lossy().trim_start_matches('/').to_string();
        c.parents(&rel);
        c.file_from(&rel, &lib, 0o755)?;
    }
    std::fs::write(path, c.finish()).map_err(|e| format!("{}: {e}", path.display()))
}

/// The shared libraries `ldd` lists for `exe` (with the dynamic loader), resolved.
fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>> {
    let out = sh(Command::new("ldd").arg(exe))?;
    let mut libs = Vec::new();
    for line in out.lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// `-accel tcg` unless `WAYMARK_VMCAN_ACCEL=kvm`: the nested KVM of the build machines hangs
/// a stock kernel (docs/can-vm.md), so KVM is opt-in where it is known to work.
fn accel_args() -> Vec<&'static str> {
    match std::env::var("WAYMARK_VMCAN_ACCEL").as_deref() {
        Ok("kvm") => vec!["-enable-kvm", "-cpu", "host"],
        _ => vec!["-accel", "tcg,thread=multi", "-cpu", "max"],
    }
}

fn run_qemu(vmlinuz: &Path, initrd: &Path, filter: Option<&str>) -> Result<u8> {
    let mut append = String::from("console=ttyS0 panic=-1 quiet loglevel=3");
    if let Some(f) = filter {
        // Unknown `key=value` words of the kernel command line become init's environment.
        append.push_str(&format!(" WAYMARK_VMCAN_FILTER={f}"));
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(accel_args())
        .args(["-m", "1024", "-smp", "2", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-vga", "none", "-nic", "none"])
        .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64 (package qemu-system-x86): {e}"))?;
    let stdout = child.stdout.take().ok_or("no qemu stdout")?;
    // A watchdog: kill this QEMU (by its own handle's pid) when it overruns.
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        // The sender is dropped when the console closes: only a timeout kills.
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(VM_TIMEOUT) {
            eprintln!("vmcan: VM still running after {VM_TIMEOUT:?}; killing QEMU {pid}");
            if let Err(e) = Command::new("kill").args(["-9", &pid.to_string()]).status() {
                eprintln!("vmcan: kill {pid}: {e}");
            }
        }
    });
    let mut code = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let line = line.trim_end_matches('\r');
        if line == INIT_MARKER {
            println!(
                "vmcan: VM boot (QEMU start to /init) took {:.1} s",
                started.elapsed().as_secs_f64()
            );
        } else if let Some(c) = line.strip_prefix(EXIT_MARKER) {
            code = c.trim().parse::<u8>().ok();
            println!(
                "vmcan: VM ran the cases in {:.1} s (QEMU start to exit marker)",
                started.elapsed().as_secs_f64()
            );
        } else {
            println!("{line}");
        }
    }
    drop(done_tx);
    if watchdog.join().is_err() {
        eprintln!("vmcan: the watchdog thread panicked");
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    code.ok_or_else(|| format!("the VM ended ({status}) without reporting an exit code"))
}
