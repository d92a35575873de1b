# THROWAWAY probe for .ci/cgroup_v2_vm.sh (to be deleted)
import os, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

def test_pure_v2_controllers():
    ctl = open("/sys/fs/cgroup/cgroup.controllers").read().split()
    print("controllers:", ctl)
    assert {"memory", "cpu", "io", "pids"} <= set(ctl)
    mounts = [l for l in open("/proc/mounts") if " cgroup" in l]
    print(mounts)
    assert all(l.split()[2] == "cgroup2" for l in mounts)

def test_root_cgroup():
    assert open("/proc/self/cgroup").read() == os.environ.get("PROBE_EXPECT_CG", "0::/") + "\n"

def test_paths_and_env():
    assert os.geteuid() == 0
    assert os.getcwd() == REPO
    assert sys.prefix == REPO + "/.venv", sys.prefix
    assert os.environ["HOME"] == "/root" and os.environ["LANG"] == "C.UTF-8"
    assert os.environ["JOBBER_PROBE"] == "a b'c\nd"
    assert os.environ["PATH"].startswith(REPO + "/.venv/bin:")
    import jobber; print(jobber.__file__)
    assert jobber.__file__.startswith(REPO)

def test_cryptography():
    import cryptography
    from cryptography.hazmat.primitives.asymmetric import ed25519
    k = ed25519.Ed25519PrivateKey.generate()
    k.public_key().verify(k.sign(b"x"), b"x")
    print("cryptography", cryptography.__version__)

def test_write_repo():
    with open(os.path.join(HERE, "probe_out.txt"), "w") as f:
        f.write(os.uname().release + " " + open("/proc/cmdline").read())

def test_block_dir_io_max():
    d = os.environ["JOBBER_TEST_BLOCK_DIR"]
    st = os.stat(d)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    print("block dev", dev, open("/sys/block/vda/dev").read())
    assert dev == open("/sys/block/vda/dev").read().strip()
    cg = "/sys/fs/cgroup/probe-io"
    os.makedirs(cg, exist_ok=True)
    open("/sys/fs/cgroup/cgroup.subtree_control", "w").write("+io +memory")
    open(cg + "/io.max", "w").write(f"{dev} wbps=1048576")
    t0 = time.monotonic()
    subprocess.run(["sh", "-c", f"echo $$ > {cg}/cgroup.procs; exec dd if=/dev/zero of={d}/f bs=1M count=3 oflag=direct status=none"], check=True)
    dt = time.monotonic() - t0
    print("3 MiB at 1 MiB/s:", dt)
    assert dt > 1.5

def test_tmp_shm_pts_lo():
    import multiprocessing, pty, socket
    multiprocessing.Lock()  # needs /dev/shm
    m, s = pty.openpty(); os.close(m); os.close(s)
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(); c = socket.create_connection(srv.getsockname()); c.close()
    open("/tmp/x", "w").write("x")
