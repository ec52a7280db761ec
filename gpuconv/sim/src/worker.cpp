// worker.cpp -- the process that runs simulated kernels for gpuconv.sim.
//
// One long-lived worker per (Python process, compiler, ASan or not) loads the
// module libraries (dlopen) and runs each launch in-process.  A segfault, an
// abort, an AddressSanitizer report or a hang (alarm) ends the worker, not
// Python: gpuconv/sim/_worker.py turns its exit status and the report it wrote
// to stderr (a memfd the Python side reads) into an exception, and starts a
// fresh worker for the next launch.  Running in-process rather than forking a
// child per launch keeps the fiber stacks mapped and faulted-in across
// launches: a fork per launch measured ~2.4 ms for a 256-thread block on a
// 2-core machine (page tables of 256 guarded stacks, first-touch faults)
// against ~0.2 ms for the whole round trip in-process.
//
// Array arguments travel through `arena`, a memfd that Python and the worker
// both map MAP_SHARED: the kernel runs on it directly, or, in the ASan build,
// on a separate malloc'd copy of each region so that a read or write past one
// array's end hits a redzone.
//
// Protocol (native-endian, each message prefixed by its u32 byte length):
//   LOAD  u32 1, u32 len, path            -> i32 0, u32 handle, u32 n, n x (str name, str signature)
//                                          | i32 -1, str error
//   RUN   u32 2, u32 handle, u32 index, u32 grid[3], u32 block[3], u64 smem,
//         u64 arena_size, u32 timeout_s, u32 schedule, u64 seed, u64 max_dynamic_attr,
//         u32 nregions, nregions x (u64 off, u64 size),
//         u32 nargs, nargs x (u32 kind: 0 value {u32 size, bytes} | 1 pointer {u32 region, u64 offset} | 2 null)
//                                          -> i32 status (0 ok, 1 kernel error, 4 bad request,
//                                             5 deadlock or barrier not reached by all),
//                                             str message
//   (str = u32 length + bytes)
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <string>
#include <vector>

namespace {

typedef int (*LaunchFn)(const char*, const unsigned*, const unsigned*, unsigned long long, void**, char*, size_t);
struct Entry {
    const char* name;
    LaunchFn launch;
    const char* (*signature)();
};
struct LaunchConfig {                       // gpuconv_sim_entry.h
    unsigned schedule;
    unsigned nregions;
    unsigned long long seed;
    unsigned long long max_dynamic_attr;
    const unsigned char* const* region_base;
    const unsigned long long* region_size;
};
typedef void (*ConfigureFn)(const LaunchConfig*);
struct Module {
    const Entry* entries;
    unsigned n;
    ConfigureFn configure;
};

int in_fd, out_fd, arena_fd;
unsigned char* arena = nullptr;
size_t arena_size = 0;
std::vector<Module> modules;

bool read_full(int fd, void* buf, size_t n) {
    char* p = (char*)buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

bool write_full(int fd, const void* buf, size_t n) {
    const char* p = (const char*)buf;
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

struct Writer {
    std::string b;
    void u32(uint32_t v) { b.append((const char*)&v, 4); }
    void i32(int32_t v) { b.append((const char*)&v, 4); }
    void str(const std::string& s) { u32((uint32_t)s.size()); b += s; }
    bool send() {
        uint32_t n = (uint32_t)b.size();
        return write_full(out_fd, &n, 4) && write_full(out_fd, b.data(), b.size());
    }
};

struct Reader {
    const unsigned char* p;
    const unsigned char* end;
    bool ok = true;
    template <class T> T get() {
        T v{};
        if (end - p < (ptrdiff_t)sizeof(T)) { ok = false; return v; }
        memcpy(&v, p, sizeof(T));
        p += sizeof(T);
        return v;
    }
    const unsigned char* bytes(size_t n) {
        if ((size_t)(end - p) < n) { ok = false; return nullptr; }
        const unsigned char* r = p;
        p += n;
        return r;
    }
};

bool reply(int status_code, const std::string& msg) {
    Writer w;
    w.i32(status_code);
    w.str(msg);
    return w.send();
}

bool do_load(Reader& r) {
    uint32_t len = r.get<uint32_t>();
    const unsigned char* path = r.bytes(len);
    if (!r.ok) return reply(-1, "bad LOAD request");
    std::string p((const char*)path, len);
    void* h = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) return reply(-1, std::string("dlopen failed: ") + dlerror());
    typedef const Entry* (*EntriesFn)(unsigned*);
    EntriesFn f = (EntriesFn)dlsym(h, "gpuconv_sim_entries");
    if (!f) return reply(-1, "module has no gpuconv_sim_entries: " + p);
    Module m;
    m.entries = f(&m.n);
    m.configure = (ConfigureFn)dlsym(h, "gpuconv_sim_configure");
    if (!m.configure) return reply(-1, "module has no gpuconv_sim_configure: " + p);
    modules.push_back(m);
    Writer w;
    w.i32(0);
    w.u32((uint32_t)modules.size() - 1);
    w.u32(m.n);
    for (unsigned i = 0; i < m.n; ++i) {
        w.str(m.entries[i].name);
        w.str(m.entries[i].signature());
    }
    return w.send();
}

bool map_arena(size_t size) {
    if (size == arena_size) return true;
    if (arena) munmap(arena, arena_size);
    arena = nullptr;
    arena_size = 0;
    if (size == 0) return true;
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, arena_fd, 0);
    if (p == MAP_FAILED) return false;
    arena = (unsigned char*)p;
    arena_size = size;
    return true;
}

struct Arg {
    uint32_t kind;
    std::string value;
    uint32_t region;
    uint64_t offset;
};

bool do_run(Reader& r) {
    const uint32_t handle = r.get<uint32_t>(), index = r.get<uint32_t>();
    unsigned grid[3], block[3];
    for (auto& g : grid) g = r.get<uint32_t>();
    for (auto& b : block) b = r.get<uint32_t>();
    const uint64_t smem = r.get<uint64_t>(), asize = r.get<uint64_t>();
    const uint32_t timeout = r.get<uint32_t>();
    const uint32_t schedule = r.get<uint32_t>();
    const uint64_t seed = r.get<uint64_t>(), max_dyn = r.get<uint64_t>();
    const uint32_t nreg = r.get<uint32_t>();
    std::vector<uint64_t> roff(nreg), rsize(nreg);
    for (uint32_t i = 0; i < nreg; ++i) { roff[i] = r.get<uint64_t>(); rsize[i] = r.get<uint64_t>(); }
    const uint32_t nargs = r.get<uint32_t>();
    std::vector<Arg> args(nargs);
    for (auto& a : args) {
        a.kind = r.get<uint32_t>();
        if (a.kind == 0) {
            uint32_t n = r.get<uint32_t>();
            const unsigned char* b = r.bytes(n);
            if (b) a.value.assign((const char*)b, n);
        } else if (a.kind == 1) {
            a.region = r.get<uint32_t>();
            a.offset = r.get<uint64_t>();
            if (a.region >= nreg) r.ok = false;
        }
    }
    if (!r.ok || handle >= modules.size() || index >= modules[handle].n) return reply(4, "bad RUN request");
    if (!map_arena(asize)) return reply(4, "cannot map the argument arena");
    for (uint32_t i = 0; i < nreg; ++i)
        if (roff[i] + rsize[i] > arena_size) return reply(4, "argument region outside the arena");
    const Entry& e = modules[handle].entries[index];

    std::vector<unsigned char*> base(nreg);
    for (uint32_t i = 0; i < nreg; ++i) {
#if defined(__SANITIZE_ADDRESS__)
        base[i] = (unsigned char*)malloc(rsize[i]);          // one heap block per array: overflows hit a redzone
        if (rsize[i]) memcpy(base[i], arena + roff[i], rsize[i]);
#else
        base[i] = arena + roff[i];
#endif
    }
    std::vector<void*> argv(nargs);
    std::vector<std::string> store(nargs);
    for (uint32_t i = 0; i < nargs; ++i) {
        const Arg& a = args[i];
        if (a.kind == 0) store[i] = a.value;
        else {
            void* ptr = a.kind == 1 ? (void*)(base[a.region] + a.offset) : nullptr;
            store[i].assign((const char*)&ptr, sizeof ptr);
        }
        store[i].reserve(64);                                 // heap storage: aligned for any scalar type
        argv[i] = &store[i][0];
    }
    std::vector<unsigned long long> sizes(rsize.begin(), rsize.end());
    const LaunchConfig cfg{schedule, nreg, seed, max_dyn, base.data(), sizes.data()};
    modules[handle].configure(&cfg);
    static char msg[1 << 16];
    msg[0] = 0;
    if (timeout) alarm(timeout);
    int rc = e.launch(e.name, grid, block, smem, argv.data(), msg, sizeof msg);
    alarm(0);
    fflush(stdout);
    fflush(stderr);
#if defined(__SANITIZE_ADDRESS__)
    for (uint32_t i = 0; i < nreg; ++i) {
        if (rsize[i]) memcpy(arena + roff[i], base[i], rsize[i]);
        free(base[i]);
    }
#endif
    if (rc == 0) return reply(0, "");
    return reply(rc == 2 ? 5 : 1, msg);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s IN_FD OUT_FD ARENA_FD\n", argv[0]);
        return 2;
    }
    in_fd = atoi(argv[1]);
    out_fd = atoi(argv[2]);
    arena_fd = atoi(argv[3]);
    signal(SIGPIPE, SIG_IGN);
    std::vector<unsigned char> buf;
    for (;;) {
        uint32_t n;
        if (!read_full(in_fd, &n, 4)) return 0;
        buf.resize(n);
        if (!read_full(in_fd, buf.data(), n)) return 0;
        Reader r{buf.data(), buf.data() + n};
        uint32_t op = r.get<uint32_t>();
        bool ok;
        if (op == 1) ok = do_load(r);
        else if (op == 2) ok = do_run(r);
        else return 0;
        if (!ok) return 0;
    }
}
