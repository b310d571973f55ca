"""JupyterHub's configuration for the course (one server): read by the hub that
`ste-course hub --students roster.csv` starts (ste_course/classroom/hub.py), which copies this file into
its state folder and passes its settings as JSON in STE_HUB_SETTINGS.

- Authentication: PAM, i.e. the system users `ste-course hub` created (passwords in
  STATE/passwords.csv), and only the roster's students and the instructor.
- Spawner: the default LocalProcessSpawner: each user's JupyterLab runs as that user, from the
  shared course venv, in their home (0700), on 127.0.0.1.
- Proxy: configurable-http-proxy from npm (hub/proxy), on the address and port given
  (127.0.0.1 unless told otherwise); its API and the hub's own API on free loopback ports.
"""

import json
import os

c = get_config()  # noqa: F821 (JupyterHub's config loader provides it)
s = json.load(open(os.environ["STE_HUB_SETTINGS"], encoding="utf-8"))
state = s["state"]

c.JupyterHub.ip = s["ip"]
c.JupyterHub.port = s["port"]
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = s["hub_port"]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{s['proxy_api_port']}"
c.ConfigurableHTTPProxy.command = [s["proxy"]]
c.ConfigurableHTTPProxy.pid_file = os.path.join(state, "jupyterhub-proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{os.path.join(state, 'jupyterhub.sqlite')}"
c.JupyterHub.cookie_secret_file = os.path.join(state, "jupyterhub_cookie_secret")
c.JupyterHub.cleanup_servers = True  # stopping the hub stops the users' servers
c.JupyterHub.cleanup_proxy = True

c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.open_sessions = False  # no login session per server (containers have no systemd-logind)
c.Authenticator.allowed_users = set(s["students"]) | {s["instructor"]}
c.Authenticator.admin_users = set()  # the hub is administered as root, on the command line

c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [os.path.join(s["venv"], "bin", "jupyterhub-singleuser")]
c.Spawner.ip = "127.0.0.1"
c.Spawner.notebook_dir = "~"
c.Spawner.default_url = "/lab/tree/course/00_start_here.ipynb"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
# runuser-style environments keep root's PATH; give an explicit one every user can read
c.Spawner.env_keep = ["LANG", "LC_ALL"]
c.Spawner.environment = {
    "PATH": f"{s['venv']}/bin:/usr/local/bin:/usr/bin:/bin",
    "JUPYTER_CONFIG_PATH": s["student_config"],
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
}
if s.get("checks"):  # the course's own checks (ste_course.classroom.hub.install_checks), for Validate in every kernel
    c.Spawner.environment["STE_COURSE_CHECKS"] = s["checks"]


def instructor_tools(spawner):
    """The instructor's server also reads jupyter-config/instructor (formgrader on)."""
    if spawner.user.name == s["instructor"]:
        spawner.default_url = "/lab"
        spawner.environment = {**spawner.environment,
                               "JUPYTER_CONFIG_PATH": f"{s['instructor_config']}:{s['student_config']}"}
        if s.get("instructor_data"):  # formgrader's MathJax from the server itself (ste_course.classroom.hub)
            spawner.environment["JUPYTER_PATH"] = s["instructor_data"]


c.Spawner.pre_spawn_hook = instructor_tools
