//! Real services for tests, started from the binaries `scripts/setup-test-services.sh` caches
//! under `$RETAIL_AI_HOME/tools`: a tansu Kafka-protocol broker (sqlite storage) and a
//! SeaweedFS S3 server, both bound to 127.0.0.1 on free ports and killed on drop. A missing
//! binary fails the test with the command that installs it; nothing is skipped. And a real
//! RTSP server for camera tests ([`rtsp`]).

#![cfg_attr(not(test), deny(unused_crate_dependencies))]

pub mod rtsp;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `$RETAIL_AI_HOME`, default `~/.cache/retail-ai`.
pub fn cache_home() -> PathBuf {
    std::env::var_os("RETAIL_AI_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/retail-ai"),
        PathBuf::from,
    )
}

fn tool(rel: &str) -> PathBuf {
    let p = cache_home().join("tools").join(rel);
    assert!(p.is_file(), "{} missing: run scripts/setup-test-services.sh (make test does)", p.display());
    p
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on 127.0.0.1:{port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The instruction-set features that choose ONNX Runtime's CPU kernels: results (INT8 ones
/// above all) are bit-identical only between machines of one kind.
pub fn cpu_kind() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> =
        info.lines().find(|l| l.starts_with("flags")).map(|l| l.split_whitespace().collect()).unwrap_or_default();
    let wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "neon", "asimddp"];
    let present: Vec<&str> = wanted.iter().copied().filter(|w| flags.contains(w)).collect();
    format!("{} {}", std::env::consts::ARCH, present.join(" "))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A tansu broker with its sqlite file in a temp dir; can be stopped and resumed on the same
/// port and data, to simulate an outage.
pub struct Tansu {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Tansu {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tansu { port: free_port(), dir: dir.path().to_owned(), child: None, _dir: dir };
        t.resume();
        t
    }

    /// `host:port` for `kafka://` URLs.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn resume(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tool("tansu/bin/tansu"))
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            // tansu resolves sqlite:// paths against its working directory.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        wait_for_port(self.port, "tansu");
    }

    /// Kills the broker (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A SeaweedFS server with one bucket, `lake`, and one identity.
pub struct SeaweedFs {
    child: Child,
    pub s3_port: u16,
    _dir: tempfile::TempDir,
}

pub const S3_ACCESS_KEY: &str = "retail-test";
pub const S3_SECRET_KEY: &str = "retail-test-secret";
pub const S3_BUCKET: &str = "lake";

impl SeaweedFs {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"identities":[{{"name":"retail","credentials":[{{"accessKey":"{S3_ACCESS_KEY}","secretKey":"{S3_SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        let base = free_port_block();
        let child = Command::new(tool("seaweedfs/bin/weed"))
            .arg("mini")
            .arg(format!("-dir={}", dir.path().join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false", "-webdav=false"])
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-bucket={S3_BUCKET}"))
            .arg(format!("-s3.config={}", config.display()))
            .arg(format!("-master.port={base}"))
            .arg(format!("-volume.port={}", base + 1))
            .arg(format!("-filer.port={}", base + 2))
            .arg(format!("-s3.port={}", base + 3))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start weed");
        let s = SeaweedFs { child, s3_port: base + 3, _dir: dir };
        wait_for_port(s.s3_port, "SeaweedFS S3");
        // The bucket is created just after the port opens.
        std::thread::sleep(Duration::from_secs(2));
        s
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Four consecutive free ports whose +10000 gRPC partners are free too.
fn free_port_block() -> u16 {
    for _ in 0..200 {
        let p = free_port();
        if !(20_000..50_000).contains(&p) {
            continue;
        }
        let ok = (0..4u16).all(|i| {
            TcpListener::bind(("127.0.0.1", p + i)).is_ok() && TcpListener::bind(("127.0.0.1", p + i + 10_000)).is_ok()
        });
        if ok {
            return p;
        }
    }
    panic!("no free block of ports on 127.0.0.1");
}

/// Debian's PostgreSQL server binaries (`apt-get install postgresql`; the test set-up does).
fn postgres_bin(name: &str) -> PathBuf {
    let root = PathBuf::from("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> =
        std::fs::read_dir(&root).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    versions.sort();
    let bin = versions.last().map(|v| v.join("bin").join(name));
    bin.filter(|b| b.is_file()).unwrap_or_else(|| {
        panic!(
            "PostgreSQL's {name} is missing under {}: apt-get install postgresql (make test-services does)",
            root.display()
        )
    })
}

/// A private PostgreSQL server (its own data dir, 127.0.0.1, a free port, trust auth for the
/// user `retail`), killed on drop. As root it runs as the `postgres` user, which the server
/// demands.
pub struct Postgres {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Postgres {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let as_root = is_root();
        // setpriv execs (no fork), so the child is the server itself, whose signals matter.
        let run = |bin: PathBuf| {
            if as_root {
                let mut c = Command::new("setpriv");
                c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]).arg(bin);
                c
            } else {
                Command::new(bin)
            }
        };
        if as_root {
            let ok = Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status().is_ok_and(|s| s.success());
            assert!(ok, "chown {} to postgres failed", dir.path().display());
        }
        let out = run(postgres_bin("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "retail", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let child = run(postgres_bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        wait_for_port(port, "postgres");
        Postgres { port, child, _dir: dir }
    }

    /// A URL for a new, empty database of this server.
    pub fn new_database(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("psql")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "retail", "-d", "postgres", "-c"])
                .arg(format!("CREATE DATABASE {name}"))
                .output()
                .expect("run psql");
            if out.status.success() {
                break;
            }
            // Listening is not yet accepting: the server may still be starting up.
            assert!(Instant::now() < deadline, "CREATE DATABASE failed: {}", String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(Duration::from_millis(200));
        }
        format!("postgres://retail@127.0.0.1:{}/{name}", self.port)
    }
}

static NEXT_DB: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGKILL of the postmaster alone would leave its backends; SIGQUIT stops them all.
        let _ = Command::new("kill").args(["-QUIT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
