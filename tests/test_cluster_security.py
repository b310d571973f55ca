"""Who may join a grading cluster (issue 21, attack 9): ``--cluster`` to a scheduler on another
machine is refused over plain ``tcp://`` (no authentication: anyone who reaches the scheduler
can add a worker, receive every student's code and inputs and return made-up evidence) unless
``--insecure-cluster``; ``tls://`` needs the course's certificates, and a TLS scheduler on this
machine accepts this client with them and refuses a client whose certificate another CA signed.
Certificates are made with openssl as docs/grading.md shows; no TensorFlow, no notebook runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ste_course.cli.commands import main
from ste_course.grading.distributed import DaskExecutor, cluster_security
from ste_course.grading.jobs import GradeError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_containment import SOURCE  # noqa: E402


def test_a_plain_tcp_scheduler_on_another_machine_is_refused(tmp_path, capsys):
    code = main(["--solutions", str(SOURCE), "grade", str(tmp_path / "subs"), "--out", str(tmp_path / "graded"),
                 "--cluster", "tcp://10.255.255.1:8786", "--secret-file", str(tmp_path / "secret")])
    err = capsys.readouterr().err
    assert code == 2 and "refused" in err and "tls://" in err and "--insecure-cluster" in err, err
    assert not (tmp_path / "graded").exists()  # refused before anything was written or sent


@pytest.mark.parametrize("address", ["tcp://10.255.255.1:8786", "10.255.255.1:8786", "ws://10.255.255.1:8786",
                                     "tcp://[2001:db8::1]:8786", "tcp://grader.invalid:8786"])
def test_only_tls_or_an_explicit_insecure_flag_reaches_another_machine(address):
    with pytest.raises(GradeError, match="refused"):
        cluster_security(address)
    assert cluster_security(address, insecure=True) is None


@pytest.mark.parametrize("address", ["local", "tcp://127.0.0.1:8786", "tcp://localhost:8786", "tcp://[::1]:8786",
                                     "127.0.0.1:8786"])
def test_this_machine_needs_no_certificates(address):
    assert cluster_security(address) is None


def test_tls_without_certificates_says_which_are_missing(tmp_path):
    with pytest.raises(GradeError, match="--tls-ca-file"):
        cluster_security("tls://10.255.255.1:8786")
    with pytest.raises(GradeError, match="no certificate or key file"):
        cluster_security("tls://10.255.255.1:8786", str(tmp_path / "ca.pem"), str(tmp_path / "c.pem"),
                         str(tmp_path / "c.key"))


def openssl(*args: str, cwd: Path) -> None:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def make_ca(folder: Path, names: list[str]) -> dict:
    """A CA and a certificate signed by it for each of ``names`` (as in docs/grading.md)."""
    folder.mkdir()
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=ste-course grading CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)
    for name in names:
        (folder / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=folder)
    return {name: (str(folder / f"{name}.pem"), str(folder / f"{name}.key")) for name in names} | {
        "ca": str(folder / "ca.pem")}


def test_a_tls_cluster_admits_the_course_certificates_only(tmp_path):
    from distributed import LocalCluster
    from distributed.security import Security

    course = make_ca(tmp_path / "course", ["scheduler", "worker", "grader"])
    other = make_ca(tmp_path / "other", ["grader"])
    security = Security(tls_ca_file=course["ca"], tls_scheduler_cert=course["scheduler"][0],
                        tls_scheduler_key=course["scheduler"][1], tls_worker_cert=course["worker"][0],
                        tls_worker_key=course["worker"][1], tls_client_cert=course["grader"][0],
                        tls_client_key=course["grader"][1], require_encryption=True)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls://", host="127.0.0.1",
                      dashboard_address=None, security=security) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        ours = DaskExecutor(address, sandbox=False, connect_timeout=20,
                            security=cluster_security(address, course["ca"], *course["grader"]))
        try:
            ours.connect()
            assert len(ours.client.scheduler_info()["workers"]) == 1
        finally:
            ours.close()
        for name, files in (("another CA's certificate", (other["ca"], *other["grader"])),
                            ("a certificate the course CA did not sign", (course["ca"], *other["grader"]))):
            stranger = DaskExecutor(address, sandbox=False, connect_timeout=3,
                                    security=cluster_security(address, *files))
            with pytest.raises(GradeError, match="TLS|SSL"):  # the handshake fails: {name}
                stranger.connect()
            stranger.close()
        plain = DaskExecutor(address.replace("tls://", "tcp://"), sandbox=False, connect_timeout=3)
        with pytest.raises(GradeError):
            plain.connect()
        plain.close()
