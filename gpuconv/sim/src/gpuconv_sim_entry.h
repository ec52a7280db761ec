// gpuconv_sim_entry.h -- what the generated module source needs to expose kernels to the
// worker: a launch trampoline and a parameter-type descriptor per name
// expression, both derived by templates from the kernel's function type.
#pragma once
#include <string>
#include <type_traits>
#include <utility>

namespace gpuconv_sim {

int run_grid(const char* name, const unsigned* grid, const unsigned* block, unsigned long long smem,
             void (*invoke)(void*), void* ctx, char* err, size_t errlen);

typedef int (*LaunchFn)(const char* name, const unsigned* grid, const unsigned* block, unsigned long long smem,
                        void** args, char* err, size_t errlen);

// Per-launch settings, set by worker.cpp through gpuconv_sim_configure before
// each launch (layout shared with worker.cpp).
struct LaunchConfig {
    unsigned schedule;                         // 0 default, 1 reversed, 2 warp-greedy, 3 random
    unsigned nregions;
    unsigned long long seed;
    unsigned long long max_dynamic_attr;       // RawKernel.max_dynamic_shared_size_bytes, 0 if never set
    const unsigned char* const* region_base;   // the array arguments (global memory)
    const unsigned long long* region_size;
};

// Layout shared with worker.cpp.
struct Entry {
    const char* name;
    LaunchFn launch;
    const char* (*signature)();
};

template <class T> std::string type_name() {
    std::string s = __PRETTY_FUNCTION__;             // "... [with T = float; ...]"
    const size_t a = s.find("T = ");
    if (a == std::string::npos) return "?";
    size_t b = s.find_first_of(";]", a);
    return s.substr(a + 4, b - a - 4);
}

// One value type: <category><size>:<C++ name>.  Categories: f float, i signed
// integer, u unsigned integer, b bool, c plain char, h __half, B __nv_bfloat16,
// p pointer, v void, s anything else (struct).
template <class T> std::string describe_value() {
    typedef typename std::remove_cv<T>::type U;
    char cat;
    if (std::is_same<U, bool>::value) cat = 'b';
    else if (std::is_same<U, char>::value) cat = 'c';
    else if (std::is_same<U, __half>::value) cat = 'h';
    else if (std::is_same<U, __nv_bfloat16>::value) cat = 'B';
    else if (std::is_integral<U>::value) cat = std::is_signed<U>::value ? 'i' : 'u';
    else if (std::is_floating_point<U>::value) cat = 'f';
    else if (std::is_pointer<U>::value) cat = 'p';
    else if (std::is_void<U>::value) cat = 'v';
    else cat = 's';
    size_t size = 0;
    if constexpr (!std::is_void<U>::value) size = sizeof(U);
    return std::string(1, cat) + std::to_string(size) + ":" + type_name<U>();
}

// One parameter: a value type, or '*' + 'c' (const pointee) / 'm' + the pointee.
template <class P> std::string describe_param() {
    if constexpr (std::is_pointer<P>::value) {
        typedef typename std::remove_pointer<P>::type E;
        return std::string("*") + (std::is_const<E>::value ? "c" : "m") + describe_value<E>();
    } else {
        return describe_value<P>();
    }
}

template <class... P> std::string signature_of(void (*)(P...)) {
    std::string s;
    int i = 0;
    ((s += (i++ ? ";" : "") + describe_param<P>()), ...);
    return s;
}

template <class... P> struct Invoke {
    void (*f)(P...);
    void** args;
    template <size_t... I> void call(std::index_sequence<I...>) {
        f(*static_cast<typename std::remove_cv<P>::type*>(args[I])...);
    }
    static void run(void* self) { static_cast<Invoke*>(self)->call(std::index_sequence_for<P...>{}); }
};

template <class... P>
int launch_kernel(void (*f)(P...), const char* name, const unsigned* grid, const unsigned* block,
                  unsigned long long smem, void** args, char* err, size_t errlen) {
    Invoke<P...> inv{f, args};
    return run_grid(name, grid, block, smem, &Invoke<P...>::run, &inv, err, errlen);
}

template <auto F> struct Thunk {
    static int launch(const char* name, const unsigned* grid, const unsigned* block, unsigned long long smem,
                      void** args, char* err, size_t errlen) {
        return launch_kernel(F, name, grid, block, smem, args, err, errlen);
    }
    static const char* signature() {
        static const std::string s = signature_of(F);
        return s.c_str();
    }
};

}  // namespace gpuconv_sim
