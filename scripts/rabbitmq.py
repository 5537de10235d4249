"""A RabbitMQ node of its own, for the tests and benchmarks of AMQP notifications (Ceph RGW pushes
bucket notifications to it): data, logs and cookie in a folder, AMQP (and AMQPS, with a CA of its
own) and distribution on free loopback ports, its own epmd. Needs Debian's rabbitmq-server (and
pika for `publish`): `bash scripts/setup.sh tests` installs them.

    r = Rabbit(folder); url = r.url(); ...; r.stop()
"""
import os
import secrets
import signal
import subprocess
import time
import uuid

from rgwcluster import free_port

RABBIT_BIN = "/usr/lib/rabbitmq/bin"
VHOST = "s3m/tests"  # a "/" in it: the URL must carry it as %2F
USER = "s3mount"


def stop_process(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


class Rabbit:
    """A RabbitMQ node of its own: data, logs and cookie under `d`, AMQP and distribution on free
    loopback ports, its own epmd. stop() ends exactly the processes started here."""

    def __init__(self, d):
        self.dir = str(d)
        self.port = free_port()
        self.password = secrets.token_urlsafe(18)
        epmd_port = free_port()
        for sub in ("mnesia", "log"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        # TLS too (amqps://): a CA of its own and a certificate for localhost and 127.0.0.1.
        self.tls_port = free_port()
        self.ca = os.path.join(self.dir, "ca.pem")
        pki = [("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=s3mount test CA"),
               ("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"),
               ("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem",
                "-days", "2", "-extfile", "san.ext")]
        with open(os.path.join(self.dir, "san.ext"), "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        for args in pki:
            r = subprocess.run(["openssl", *args], cwd=self.dir, capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise RuntimeError(f"openssl {args[0]}: {r.stderr}")
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write("listeners.tcp.default = 127.0.0.1:%d\n" % self.port)
            f.write("listeners.ssl.default = 127.0.0.1:%d\n" % self.tls_port)
            for k, v in (("cacertfile", "ca.pem"), ("certfile", "server.pem"), ("keyfile", "server.key")):
                f.write(f"ssl_options.{k} = {os.path.join(self.dir, v)}\n")
            f.write("ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n")
        name = f"s3mtest{uuid.uuid4().hex[:8]}@localhost"
        self.env = dict(os.environ, HOME=self.dir, RABBITMQ_NODENAME=name, RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                        RABBITMQ_NODE_PORT=str(self.port), RABBITMQ_DIST_PORT=str(free_port()),
                        RABBITMQ_MNESIA_BASE=os.path.join(self.dir, "mnesia"), RABBITMQ_LOG_BASE=os.path.join(self.dir, "log"),
                        RABBITMQ_FEATURE_FLAGS_FILE=os.path.join(self.dir, "mnesia", "feature_flags"),
                        RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.dir, "enabled_plugins"),
                        RABBITMQ_CONFIG_FILE=os.path.join(self.dir, "rabbitmq"),
                        RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(self.dir, "advanced.config"),
                        RABBITMQ_PID_FILE=os.path.join(self.dir, "rabbit.pid"),
                        ERL_EPMD_PORT=str(epmd_port), ERL_EPMD_ADDRESS="127.0.0.1",
                        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")
        self.log = open(os.path.join(self.dir, "server.out"), "w")
        self.epmd = subprocess.Popen(["epmd", "-port", str(epmd_port), "-address", "127.0.0.1"], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.proc = subprocess.Popen([os.path.join(RABBIT_BIN, "rabbitmq-server")], env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        # await_startup fails at once while the node is not yet known to epmd: asked again.
        deadline = time.time() + 120
        while True:
            r = self.ctl("await_startup", "--timeout", "20", timeout=60)
            if r.returncode == 0 or time.time() > deadline or self.proc.poll() is not None:
                break
            time.sleep(1)
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"rabbitmq did not start: {r.stderr}\n{open(self.log.name).read()[-2000:]}")
        for cmd in (("add_user", USER, self.password), ("add_vhost", VHOST),
                    ("set_permissions", "-p", VHOST, USER, ".*", ".*", ".*")):
            r = self.ctl(*cmd)
            if r.returncode != 0:
                self.stop()
                raise RuntimeError(f"rabbitmqctl {cmd[0]}: {r.stderr}")

    def ctl(self, *args, timeout=60):
        return subprocess.run([os.path.join(RABBIT_BIN, "rabbitmqctl"), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def url(self):
        return f"amqp://{USER}@127.0.0.1:{self.port}/s3m%2Ftests"

    def messages(self, queue):
        r = self.ctl("list_queues", "-p", VHOST, "-q", "name", "messages", "messages_unacknowledged")
        for line in r.stdout.splitlines():
            parts = line.split()
            if parts and parts[0] == queue:
                return int(parts[1]), int(parts[2])
        return None

    def publish(self, queue, body, declare=False):
        """A message straight into the queue (the default exchange), as anyone allowed to publish could."""
        import pika
        c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port, VHOST, pika.PlainCredentials(USER, self.password)))
        ch = c.channel()
        if declare:
            ch.queue_declare(queue=queue, durable=True)
        if body is not None:
            ch.basic_publish(exchange="", routing_key=queue, body=body)
        c.close()

    def stop(self):
        if self.proc.poll() is None:
            self.ctl("stop", timeout=60)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        stop_process(self.epmd)
        self.log.close()
