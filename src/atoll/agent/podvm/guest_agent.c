/* atoll pod-VM guest agent: PID 1 of a pod-VM (after /init has loaded modules and mounted the
 * pod's shared directory).  Built static with gcc at image-build time; libc only.
 *
 * It speaks one framed protocol on the virtio-serial port named "atoll.agent":
 *   frame = u32 big-endian data length | u8 type | u32 big-endian id | data  (data <= 64 KiB)
 * host -> guest:  'Q' hello (id = a nonce the host chose): sent on every new connection
 *                 'R' run a container (id = process id chosen by the host)
 *                 'X' exec a process in a container's namespaces
 *                 'K' signal a process (data: the signal number in ASCII)
 *                 'P' power off
 *                 'Z' forget a process: its exit was received (or, still running, report
 *                     no exit for it: the host no longer knows it)
 *                 'T' open a TCP connection to 127.0.0.1:<port> (data: the port in ASCII; id =
 *                     the stream id the host chose) in the guest's network namespace, which
 *                     is the pod's: its containers share it
 *   'R'/'X' data is a list of NUL-terminated fields, each a key letter then its value:
 *   r<root> c<cwd> u<uid> g<gid> h<hostname> e<NAME=value> a<argument> t<target process id>
 *   m<source in the guest> d<destination in the container> o<ro|rw> (one bind mount each)
 * guest -> host:  'Y' the answer to 'Q' (id = its nonce; data: "<kernel release> <boot id>"
 *                     then one line per container: "\n<id> <pid> running|exited <code>|
 *                     signaled <signal>"), then "\nnext <the lowest id free from here on>"
 *                 'S' started (data: guest pid)  'F' failed to start (data: message)
 *                 'O' stdout bytes  'E' stderr bytes
 *                 'W' exited (data: "exited <code>" or "signaled <signal>")
 *                 'N' connected  'U' unable to connect (data: "<errno> <message>")
 * both ways, on a stream:  'D' bytes  'H' no more bytes from this side (half-close)
 *                 'C' the stream is gone (no answer is sent to a 'C')
 *                 'A' the peer consumed this many bytes (ASCII): each side sends at most
 *                     WINDOW bytes the other has not acknowledged, so buffers stay bounded
 * The first host to connect gets a 'Y' (id 0) at once, unasked.
 * The host end may go away and come back (an agent restart or kill -9): nothing is written
 * until a host has said 'Q'; the port is non-blocking and every frame goes through a bounded
 * output buffer, so containers run on and their output waits (up to OUT_SOFT bytes, then their
 * pipes fill) while no host listens.  On a disconnect (POLLHUP) the rest of a frame half sent
 * to the old host and the old host's stream frames are dropped, and its port-forward streams
 * end; a new host's 'Q' is answered first, before the output kept for it, with every
 * container's state; exits stay on record until the host says 'Z', so none is lost in flight.
 * Exec processes ('X') belong to the old host's sessions: killed on a new host's 'Q'.
 * Each container gets new pid, mount, UTS and IPC namespaces, a private /proc and a minimal
 * /dev, and is chrooted into its root file system.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_DATA 65536
#define MAX_PROCS 128
#define MAX_FIELDS 1024
#define HDR 9
#define MAX_MOUNTS 64
#define MAX_STREAMS 64
#define WINDOW 262144
#define STREAM_CHUNK 32768
#define OUT_SOFT (4 << 20)  /* output kept while no host reads: pipes are not read beyond it */

struct proc {
    uint32_t id;
    pid_t pid;
    int out, err;
    int used;
    char kind;        /* 'R' a container, 'X' an exec */
    int done;         /* exited: kept, with its status, until the host's 'Z' */
    int orphan;       /* the host forgot it: no 'W' when it exits */
    char status[32];  /* "exited <code>" or "signaled <signal>" once done */
};

static struct proc procs[MAX_PROCS];
static int port = -1;
static unsigned char inbuf[HDR + MAX_DATA + 1];
static size_t inlen;
static int connected, synced;  /* a host is on the port; it has said 'Q' */
/* frames for the host: ob[ooff..olen); ohead = bytes of the first one already sent to a host */
static unsigned char *ob;
static size_t ooff, olen, ocap, ohead;

static void say(const char *msg) {
    dprintf(1, "atoll-podvm-agent: %s\n", msg);
}

static size_t pending(void) { return olen - ooff; }

static int reserve(size_t more) {
    if (ooff && olen + more > ocap) {  /* compact first */
        memmove(ob, ob + ooff, olen - ooff);
        olen -= ooff;
        ooff = 0;
    }
    if (olen + more <= ocap) return 0;
    size_t cap = ocap ? ocap : 65536;
    while (cap < olen + more) cap *= 2;
    unsigned char *nb = realloc(ob, cap);
    if (!nb) return -1;
    ob = nb;
    ocap = cap;
    return 0;
}

static void put_header(unsigned char *hdr, char type, uint32_t id, size_t len) {
    hdr[0] = len >> 24; hdr[1] = len >> 16; hdr[2] = len >> 8; hdr[3] = len;
    hdr[4] = (unsigned char)type;
    hdr[5] = id >> 24; hdr[6] = id >> 16; hdr[7] = id >> 8; hdr[8] = id;
}

static size_t frame_len(const unsigned char *f) {
    return HDR + ((size_t)f[0] << 24 | (size_t)f[1] << 16 | (size_t)f[2] << 8 | f[3]);
}

/* write what the buffer holds to the host, as far as the port takes it now */
static void flush_out(void) {
    while (connected && synced && pending()) {
        ssize_t n = write(port, ob + ooff, pending());
        if (n < 0) {
            if (errno == EINTR) continue;
            return;  /* EAGAIN: POLLOUT says when; a closed host shows as POLLHUP */
        }
        for (size_t k = (size_t)n; k > 0;) {  /* keep track of where the next frame starts */
            if (ohead == 0) ohead = frame_len(ob + ooff);
            size_t step = k < ohead ? k : ohead;
            ooff += step;
            ohead -= step;
            k -= step;
        }
    }
    if (!pending()) ooff = olen = 0;
}

static void send_frame(char type, uint32_t id, const void *data, size_t len) {
    if (len > MAX_DATA) len = MAX_DATA;
    if (reserve(HDR + len) < 0) return;
    put_header(ob + olen, type, id, len);
    if (len) memcpy(ob + olen + HDR, data, len);
    olen += HDR + len;
    flush_out();
}

/* a frame before everything buffered (but after the rest of one a host is receiving) */
static void send_first(char type, uint32_t id, const void *data, size_t len) {
    if (len > MAX_DATA) len = MAX_DATA;
    if (reserve(HDR + len) < 0) return;
    size_t at = ooff + (ohead ? ohead : 0);
    memmove(ob + at + HDR + len, ob + at, olen - at);
    put_header(ob + at, type, id, len);
    if (len) memcpy(ob + at + HDR, data, len);
    olen += HDR + len;
    flush_out();
}

static void send_text(char type, uint32_t id, const char *text) {
    send_frame(type, id, text, strlen(text));
}

static struct proc *find(uint32_t id) {
    for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i].used && procs[i].id == id) return &procs[i];
    return NULL;
}

static struct proc *find_pid(pid_t pid) {
    for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i].used && !procs[i].done && procs[i].pid == pid) return &procs[i];
    return NULL;
}

static struct proc *slot(void) {
    for (int i = 0; i < MAX_PROCS; i++)
        if (!procs[i].used) return &procs[i];
    return NULL;
}

struct request {
    const char *root, *cwd, *hostname;
    uid_t uid;
    gid_t gid;
    long target;
    size_t nmounts;
    const char *msrc[MAX_MOUNTS], *mdst[MAX_MOUNTS];
    int mro[MAX_MOUNTS];
    char *env[MAX_FIELDS + 1];
    char *argv[MAX_FIELDS + 1];
};

static int parse_request(char *data, size_t len, struct request *rq) {
    size_t ne = 0, na = 0;
    memset(rq, 0, sizeof *rq);
    rq->cwd = "/";
    rq->target = -1;
    data[len] = 0; /* inbuf has room: the frame's data is followed by spare bytes */
    for (size_t at = 0; at < len;) {
        char *f = data + at;
        size_t n = strlen(f);
        at += n + 1;
        if (n == 0) continue;
        char key = f[0];
        char *v = f + 1;
        if (key == 'r') rq->root = v;
        else if (key == 'c') rq->cwd = v;
        else if (key == 'h') rq->hostname = v;
        else if (key == 'u') rq->uid = (uid_t)strtoul(v, NULL, 10);
        else if (key == 'g') rq->gid = (gid_t)strtoul(v, NULL, 10);
        else if (key == 't') rq->target = strtol(v, NULL, 10);
        else if (key == 'e' && ne < MAX_FIELDS) rq->env[ne++] = v;
        else if (key == 'a' && na < MAX_FIELDS) rq->argv[na++] = v;
        else if (key == 'm' && rq->nmounts < MAX_MOUNTS) {
            rq->msrc[rq->nmounts] = v;
            rq->mdst[rq->nmounts] = NULL;
            rq->mro[rq->nmounts++] = 0;
        } else if (key == 'd' && rq->nmounts) rq->mdst[rq->nmounts - 1] = v;
        else if (key == 'o' && rq->nmounts) rq->mro[rq->nmounts - 1] = strcmp(v, "ro") == 0;
    }
    return na > 0 ? 0 : -1;
}

static void fail(int errfd, const char *what) {
    dprintf(errfd, "%s: %s", what, strerror(errno));
    _exit(127);
}

static void become(struct request *rq, int errfd) {
    if (setgroups(0, NULL) < 0) fail(errfd, "setgroups");
    if (setgid(rq->gid) < 0) fail(errfd, "setgid");
    if (setuid(rq->uid) < 0) fail(errfd, "setuid");
    if (chdir(rq->cwd) < 0) fail(errfd, "chdir");
    environ = rq->env;
    execvp(rq->argv[0], rq->argv);
    dprintf(errfd, "exec %s: %s", rq->argv[0], strerror(errno));
    _exit(127);
}

static void make_dev(const char *root, int errfd) {
    char path[4096];
    static const struct { const char *name; int major, minor; } nodes[] = {
        {"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9},
        {"tty", 5, 0}};
    snprintf(path, sizeof path, "%s/dev", root);
    mkdir(path, 0755);
    if (mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k") < 0)
        fail(errfd, "mount /dev");
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        snprintf(path, sizeof path, "%s/dev/%s", root, nodes[i].name);
        if (mknod(path, S_IFCHR | 0666, makedev(nodes[i].major, nodes[i].minor)) == 0)
            chmod(path, 0666);
    }
    snprintf(path, sizeof path, "%s/dev/fd", root);
    symlink("/proc/self/fd", path);
    snprintf(path, sizeof path, "%s/dev/stdin", root);
    symlink("/proc/self/fd/0", path);
    snprintf(path, sizeof path, "%s/dev/stdout", root);
    symlink("/proc/self/fd/1", path);
    snprintf(path, sizeof path, "%s/dev/stderr", root);
    symlink("/proc/self/fd/2", path);
    snprintf(path, sizeof path, "%s/dev/shm", root);
    mkdir(path, 01777);
}

static void mkdirs(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        mkdir(path, 0755);
        *p = '/';
    }
}

/* the pod's volumes and files: bind mounts of what the host shared under /mnt/pod */
static void bind_mounts(struct request *rq, int errfd) {
    char path[4096];
    struct stat st;
    for (size_t i = 0; i < rq->nmounts; i++) {
        if (!rq->mdst[i] || stat(rq->msrc[i], &st) < 0) continue;
        snprintf(path, sizeof path, "%s/%s", rq->root, rq->mdst[i]);
        mkdirs(path);
        if (S_ISDIR(st.st_mode)) mkdir(path, 0755);
        else close(open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
        if (mount(rq->msrc[i], path, NULL, MS_BIND | MS_REC, NULL) < 0)
            fail(errfd, rq->mdst[i]);
        if (rq->mro[i] && mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
            fail(errfd, rq->mdst[i]);
    }
}

/* the child side of 'R': already in its new namespaces, pid 1 of its pid namespace */
static void container_child(struct request *rq, int errfd) {
    char path[4096];
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) fail(errfd, "make mounts private");
    if (rq->hostname) sethostname(rq->hostname, strlen(rq->hostname));
    snprintf(path, sizeof path, "%s/proc", rq->root);
    mkdir(path, 0555);
    if (mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        fail(errfd, "mount /proc");
    make_dev(rq->root, errfd);
    bind_mounts(rq, errfd);
    snprintf(path, sizeof path, "%s/tmp", rq->root);
    mkdir(path, 01777);
    if (chroot(rq->root) < 0) fail(errfd, "chroot");
    become(rq, errfd);
}

/* the child side of 'X': enters the target's namespaces and root, forks the process */
static void exec_child(struct request *rq, pid_t target, int errfd) {
    static const char *kinds[] = {"ipc", "uts", "pid", "mnt"};
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/root", target);
    int rootfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) fail(errfd, "open the container's root");
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "/proc/%d/ns/%s", target, kinds[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, 0) < 0) fail(errfd, "setns");
        close(fd);
    }
    if (fchdir(rootfd) < 0 || chroot(".") < 0) fail(errfd, "chroot");
    pid_t pid = fork();
    if (pid < 0) fail(errfd, "fork");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        become(rq, errfd);
    }
    close(errfd);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (WIFSIGNALED(status)) {
        signal(WTERMSIG(status), SIG_DFL);
        kill(getpid(), WTERMSIG(status));
    }
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128);
}

static void start(char type, uint32_t id, char *data, size_t len) {
    struct request rq;
    if (find(id)) { send_text('F', id, "process id in use"); return; }
    if (parse_request(data, len, &rq) < 0) { send_text('F', id, "no command"); return; }
    struct proc *target = NULL;
    if (type == 'X') {
        if (rq.target < 0 || !(target = find((uint32_t)rq.target)) || target->pid <= 0 ||
            target->done) {
            send_text('F', id, "the container is not running");
            return;
        }
    } else if (!rq.root) {
        send_text('F', id, "no root file system");
        return;
    }
    struct proc *p = slot();
    if (!p) { send_text('F', id, "too many processes"); return; }
    int out[2], err[2], status[2];
    if (pipe2(out, O_CLOEXEC) < 0) { send_text('F', id, "pipe"); return; }
    if (pipe2(err, O_CLOEXEC) < 0) { close(out[0]); close(out[1]); send_text('F', id, "pipe");
                                     return; }
    if (pipe2(status, O_CLOEXEC) < 0) {
        close(out[0]); close(out[1]); close(err[0]); close(err[1]);
        send_text('F', id, "pipe");
        return;
    }
    unsigned long flags = SIGCHLD;
    if (type == 'R') flags |= CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC;
    pid_t pid = (pid_t)syscall(SYS_clone, flags, 0, 0, 0, 0);
    if (pid == 0) {
        sigset_t all;
        sigfillset(&all);
        sigprocmask(SIG_UNBLOCK, &all, NULL);
        for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
        int null = open("/dev/null", O_RDONLY);
        dup2(null, 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        setsid();
        if (type == 'R') container_child(&rq, status[1]);
        exec_child(&rq, target->pid, status[1]);
    }
    close(out[1]);
    close(err[1]);
    close(status[1]);
    if (pid < 0) {
        close(out[0]); close(err[0]); close(status[0]);
        send_text('F', id, strerror(errno));
        return;
    }
    char msg[1024];
    ssize_t n, got = 0;
    while ((n = read(status[0], msg + got, sizeof msg - 1 - got)) > 0 ||
           (n < 0 && errno == EINTR))
        if (n > 0) got += n;
    close(status[0]);
    msg[got] = 0;
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
    p->used = 1;
    p->kind = type;
    p->id = id;
    p->pid = pid;
    p->out = out[0];
    p->err = err[0];
    if (got > 0) {
        send_text('F', id, msg);  /* it exits 127 now; its exit is reported without 'S' */
        p->pid = -pid;
        return;
    }
    snprintf(msg, sizeof msg, "%d", pid);
    send_text('S', id, msg);
}

static int drain(struct proc *p, int *fd, char type) {
    static char buf[32768];
    ssize_t n;
    if (*fd < 0) return 0;
    n = read(*fd, buf, sizeof buf);
    if (n > 0) { send_frame(type, p->id, buf, (size_t)n); return 1; }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    close(*fd);
    *fd = -1;
    return 0;
}

static void reap(void) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct proc *p = find_pid(pid);
        if (!p) p = find_pid(-pid);
        if (!p) continue;  /* an orphan reparented to us */
        for (int i = 0; i < 64 && (drain(p, &p->out, 'O') || drain(p, &p->err, 'E')); i++) {}
        if (p->out >= 0) close(p->out);
        if (p->err >= 0) close(p->err);
        if (p->orphan) { memset(p, 0, sizeof *p); continue; }
        if (WIFSIGNALED(status))
            snprintf(p->status, sizeof p->status, "signaled %d", WTERMSIG(status));
        else snprintf(p->status, sizeof p->status, "exited %d", WEXITSTATUS(status));
        p->done = 1;
        p->out = p->err = -1;
        send_text('W', p->id, p->status);
    }
}

/* -- port-forward streams: TCP connections to the guest's loopback, bridged to frames -------- */
struct stream {
    uint32_t id;
    int used, fd, connecting;
    size_t credit;       /* bytes the host will still accept from us */
    unsigned char *buf;  /* the host's bytes not yet written to the socket (<= WINDOW) */
    size_t len;
    int host_eof, shut, sock_eof;
};

static struct stream streams[MAX_STREAMS];

static struct stream *stream_find(uint32_t id) {
    for (int i = 0; i < MAX_STREAMS; i++)
        if (streams[i].used && streams[i].id == id) return &streams[i];
    return NULL;
}

static void stream_end(struct stream *s, int notify) {
    if (s->fd >= 0) close(s->fd);
    free(s->buf);
    if (notify) send_frame('C', s->id, NULL, 0);
    memset(s, 0, sizeof *s);
}

static void stream_error(char type, uint32_t id, int err) {
    char msg[256];
    snprintf(msg, sizeof msg, "%d %s", err, strerror(err));
    send_text(type, id, msg);
}

/* write what the host sent; acknowledge it; half-close once the host has and all is out */
static void stream_flush(struct stream *s) {
    size_t done = 0;
    while (s->len > done) {
        ssize_t n = send(s->fd, s->buf + done, s->len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) { done += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        stream_end(s, 1);
        return;
    }
    if (done) {
        char ack[24];
        memmove(s->buf, s->buf + done, s->len - done);
        s->len -= done;
        snprintf(ack, sizeof ack, "%zu", done);
        send_text('A', s->id, ack);
    }
    if (s->len == 0 && s->host_eof && !s->shut) {
        shutdown(s->fd, SHUT_WR);
        s->shut = 1;
    }
    if (s->shut && s->sock_eof) stream_end(s, 1);
}

static void stream_read(struct stream *s) {
    static unsigned char buf[STREAM_CHUNK];
    size_t want = s->credit < sizeof buf ? s->credit : sizeof buf;
    if (want == 0) return;
    ssize_t n = recv(s->fd, buf, want, MSG_DONTWAIT);
    if (n > 0) {
        s->credit -= (size_t)n;
        send_frame('D', s->id, buf, (size_t)n);
    } else if (n == 0) {
        s->sock_eof = 1;
        send_frame('H', s->id, NULL, 0);
        if (s->shut) stream_end(s, 1);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        stream_end(s, 1);
    }
}

static void stream_open(uint32_t id, char *data, size_t len) {
    data[len] = 0;
    char *end;
    long port = strtol(data, &end, 10);
    if (len == 0 || *end || port <= 0 || port > 65535) { send_text('U', id, "22 bad port");
                                                        return; }
    if (stream_find(id)) { send_text('U', id, "16 stream id in use"); return; }
    struct stream *s = NULL;
    for (int i = 0; i < MAX_STREAMS && !s; i++)
        if (!streams[i].used) s = &streams[i];
    if (!s) { send_text('U', id, "24 too many port-forward streams"); return; }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { stream_error('U', id, errno); return; }
    unsigned char *buf = malloc(WINDOW);
    if (!buf) { close(fd); send_text('U', id, "12 out of memory"); return; }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    if (rc < 0 && errno != EINPROGRESS) {
        stream_error('U', id, errno);
        close(fd);
        free(buf);
        return;
    }
    *s = (struct stream){.id = id, .used = 1, .fd = fd, .connecting = rc < 0, .credit = WINDOW,
                         .buf = buf};
    if (!s->connecting) send_frame('N', id, NULL, 0);
}

static void stream_connected(struct stream *s) {
    struct pollfd p = {s->fd, POLLOUT, 0};
    if (poll(&p, 1, 0) <= 0) return;  /* a stale event for a reused descriptor */
    int err = 0;
    socklen_t l = sizeof err;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0) err = errno;
    if (err) {
        stream_error('U', s->id, err);
        stream_end(s, 0);
        return;
    }
    s->connecting = 0;
    send_frame('N', s->id, NULL, 0);
    stream_flush(s);
}

static void stream_frame(char type, uint32_t id, char *data, size_t len) {
    if (type == 'T') { stream_open(id, data, len); return; }
    struct stream *s = stream_find(id);
    if (!s) return;  /* ended here already: the host learns it from our 'C' */
    if (type == 'D') {
        if (len > WINDOW - s->len || s->host_eof) { stream_end(s, 1); return; }
        memcpy(s->buf + s->len, data, len);
        s->len += len;
        if (!s->connecting) stream_flush(s);
    } else if (type == 'H') {
        s->host_eof = 1;
        if (!s->connecting) stream_flush(s);
    } else if (type == 'C') {
        stream_end(s, 0);
    } else if (type == 'A') {
        data[len] = 0;
        unsigned long n = strtoul(data, NULL, 10);
        s->credit = n > WINDOW - s->credit ? WINDOW : s->credit + n;
    }
}

static void stream_ready(struct stream *s, short revents) {
    if (s->connecting) { stream_connected(s); return; }
    if (s->len && (revents & (POLLOUT | POLLERR | POLLHUP))) stream_flush(s);
    if (s->used && !s->sock_eof && (revents & (POLLIN | POLLERR | POLLHUP))) stream_read(s);
}

static short stream_events(struct stream *s) {
    if (s->connecting) return POLLOUT;
    int room = pending() < OUT_SOFT;
    return (short)((!s->sock_eof && s->credit && room ? POLLIN : 0) | (s->len ? POLLOUT : 0));
}

static void power_off(void) {
    say("powering off");
    kill(-1, SIGKILL);
    sync();
    reboot(RB_AUTOBOOT);  /* with QEMU's -no-reboot and reboot=t this ends the VM */
    _exit(0);
}

static void hello(uint32_t nonce);

static void handle(char type, uint32_t id, char *data, size_t len) {
    if (type == 'R' || type == 'X') start(type, id, data, len);
    else if (type == 'K') {
        struct proc *p = find(id);
        data[len] = 0;
        int sig = atoi(data);
        if (p && !p->done && p->pid > 0 && sig > 0 && sig < NSIG) kill(p->pid, sig);
    } else if (type == 'Z') {
        struct proc *p = find(id);
        if (p && p->done) memset(p, 0, sizeof *p);
        else if (p) p->orphan = 1;
    } else if (type == 'Q') hello(id);
    else if (type == 'P') power_off();
    else if (strchr("TDHCA", type)) stream_frame(type, id, data, len);
}

/* what was meant for a host that is gone: the rest of a half-sent frame, its streams' frames
 * and an answer it never read; its streams; whatever it wrote that is still unread */
static void host_gone(void) {
    connected = synced = 0;
    inlen = 0;
    if (ohead) { ooff += ohead; ohead = 0; }
    size_t w = ooff;
    for (size_t r = ooff; r < olen;) {
        size_t n = frame_len(ob + r);
        if (!strchr("DHCANUY", ob[r + 4])) {
            memmove(ob + w, ob + r, n);
            w += n;
        }
        r += n;
    }
    olen = w;
    for (int i = 0; i < MAX_STREAMS; i++)
        if (streams[i].used) stream_end(&streams[i], 0);
    static unsigned char junk[4096];
    while (read(port, junk, sizeof junk) > 0) {}
}

/* a host (new, or the same one asking again) says hello: answer with every container's state */
static void hello(uint32_t nonce) {
    static char msg[MAX_DATA];
    struct utsname u;
    char boot[64] = "";
    if (synced)  /* asked again, or a new host came before we saw the old one go */
        for (int i = 0; i < MAX_STREAMS; i++)
            if (streams[i].used) stream_end(&streams[i], 0);
    for (int i = 0; i < MAX_PROCS; i++) {  /* the old host's exec sessions are gone */
        struct proc *p = &procs[i];
        if (!p->used || p->kind != 'X') continue;
        if (p->done) memset(p, 0, sizeof *p);
        else { if (p->pid > 0) kill(p->pid, SIGKILL); p->orphan = 1; }
    }
    uname(&u);
    int bfd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (bfd >= 0) {
        ssize_t n = read(bfd, boot, sizeof boot - 1);
        boot[n > 0 ? n : 0] = 0;
        boot[strcspn(boot, "\n")] = 0;
        close(bfd);
    }
    int len = snprintf(msg, sizeof msg, "%s %s", u.release, boot);
    for (int i = 0; i < MAX_PROCS && len < (int)sizeof msg - 64; i++) {
        struct proc *p = &procs[i];
        if (!p->used || p->orphan || p->kind != 'R') continue;
        len += snprintf(msg + len, sizeof msg - (size_t)len, "\n%u %d %s", p->id,
                        p->pid < 0 ? -p->pid : p->pid, p->done ? p->status : "running");
    }
    uint32_t next = 1;  /* ids the host may use: above every record, orphans' included */
    for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i].used && procs[i].id >= next) next = procs[i].id + 1;
    len += snprintf(msg + len, sizeof msg - (size_t)len, "\nnext %u", next);
    synced = 1;
    send_first('Y', nonce, msg, (size_t)len);
}

static void read_port(void) {
    ssize_t n = read(port, inbuf + inlen, sizeof inbuf - 1 - inlen);
    if (n == 0) { host_gone(); return; }  /* no data and no host */
    if (n < 0) return;
    inlen += (size_t)n;
    while (inlen >= HDR) {
        uint32_t len = (uint32_t)inbuf[0] << 24 | inbuf[1] << 16 | inbuf[2] << 8 | inbuf[3];
        uint32_t id = (uint32_t)inbuf[5] << 24 | inbuf[6] << 16 | inbuf[7] << 8 | inbuf[8];
        if (len > MAX_DATA) { inlen = 0; return; }  /* out of step: drop what is buffered */
        if (inlen < HDR + len) return;
        unsigned char saved = inbuf[HDR + len];
        handle((char)inbuf[4], id, (char *)inbuf + HDR, len);
        if (!connected) return;  /* handling it found the host gone: inbuf was reset */
        inbuf[HDR + len] = saved;
        memmove(inbuf, inbuf + HDR + len, inlen - HDR - len);
        inlen -= HDR + len;
    }
}

static int open_port(void) {
    DIR *d = opendir("/sys/class/virtio-ports");
    struct dirent *e;
    char path[512], name[64];
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        ssize_t n = read(fd, name, sizeof name - 1);
        close(fd);
        if (n <= 0) continue;
        name[n] = 0;
        if (strncmp(name, "atoll.agent", 11) == 0) {
            snprintf(path, sizeof path, "/dev/%s", e->d_name);
            closedir(d);
            return open(path, O_RDWR | O_CLOEXEC);
        }
    }
    if (d) closedir(d);
    return -1;
}

int main(void) {
    for (int i = 0; i < 100 && (port = open_port()) < 0; i++) usleep(50000);
    if (port < 0) { say("no atoll.agent port"); power_off(); }
    fcntl(port, F_SETFL, O_NONBLOCK);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    int greeted = 0;
    say("ready");
    for (;;) {
        struct pollfd fds[2 + 2 * MAX_PROCS + MAX_STREAMS];
        struct proc *owner[2 + 2 * MAX_PROCS + MAX_STREAMS];
        struct stream *sowner[2 + 2 * MAX_PROCS + MAX_STREAMS];
        int nf = 0, pi = -1;
        if (!connected) {  /* a host is back once the port stops reporting a hang-up */
            struct pollfd c = {port, POLLIN, 0};
            if (poll(&c, 1, 0) >= 0 && !(c.revents & POLLHUP)) connected = 1;
            if (connected && !greeted) hello(0);  /* the first host hears at once */
            greeted |= connected;
        }
        memset(sowner, 0, sizeof sowner);
        fds[nf++] = (struct pollfd){sfd, POLLIN, 0};
        if (connected) {
            pi = nf;
            fds[nf++] = (struct pollfd){port, (short)(POLLIN | (synced && pending() ? POLLOUT
                                                                 : 0)), 0};
        }
        int room = pending() < OUT_SOFT;  /* else output waits in the pipes */
        for (int i = 0; i < MAX_PROCS && room; i++) {
            if (!procs[i].used || procs[i].done) continue;
            if (procs[i].out >= 0) { owner[nf] = &procs[i]; fds[nf++] =
                                     (struct pollfd){procs[i].out, POLLIN, 0}; }
            if (procs[i].err >= 0) { owner[nf] = &procs[i]; fds[nf++] =
                                     (struct pollfd){procs[i].err, POLLIN, 0}; }
        }
        for (int i = 0; i < MAX_STREAMS; i++) {
            short ev = streams[i].used ? stream_events(&streams[i]) : 0;
            if (!ev) continue;  /* nothing wanted: an idle stream must not wake us */
            sowner[nf] = &streams[i];
            fds[nf++] = (struct pollfd){streams[i].fd, ev, 0};
        }
        if (poll(fds, (nfds_t)nf, connected ? -1 : 200) < 0 && errno != EINTR) continue;
        for (int i = 0; i < nf; i++) {
            if (!fds[i].revents) continue;
            if (fds[i].fd == sfd) {
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof si) == sizeof si) {}
                reap();
            } else if (i == pi) {
                if (fds[i].revents & POLLHUP) { host_gone(); continue; }
                if (fds[i].revents & POLLIN) read_port();
                if (connected && (fds[i].revents & POLLOUT)) flush_out();
            } else if (sowner[i]) {
                struct stream *st = sowner[i];
                if (st->used && st->fd == fds[i].fd) stream_ready(st, fds[i].revents);
            } else {
                struct proc *p = owner[i];
                if (!p->used || p->done) continue;
                if (fds[i].fd == p->out) drain(p, &p->out, 'O');
                else if (fds[i].fd == p->err) drain(p, &p->err, 'E');
            }
        }
    }
}
