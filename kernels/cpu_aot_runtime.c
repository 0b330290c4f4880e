/* The numba runtime symbols that the ahead-of-time CPU kernels call (fbgpu/engine/cpu_aot.py).
 *
 * numba compiles a kernel and its cfunc wrapper to an object that expects numba's runtime
 * (in numba's own C extensions) to be loaded. Loaded without numba, the object needs only:
 *
 * - NRT_MemInfo_alloc_aligned / NRT_MemInfo_call_dtor / NRT_Free: the kernels' scratch arrays
 *   (np.empty inside a kernel). The MemInfo layout is numba's (numba/core/runtime/nrt.cpp):
 *   the compiled code reads `refct` and `data` itself and calls the destructor at refct 0.
 * - NRT_Allocate, NRT_MemInfo_new_varsize_dtor, NRT_MemInfo_varsize_alloc / _realloc / _free:
 *   the growable buffers of numba's np.partition (seg_topk_mask), with numba's semantics
 *   (the varsize destructor calls the element destructor kept in dtor_info, then frees).
 * - numba_attempt_nocopy_reshape: a reshape without copy (np.partition reshapes its working
 *   copy). Answered for C-contiguous arrays, the only ones the kernels reshape; any other
 *   layout gets 0 ("needs a copy"), which makes the kernel raise, never compute differently.
 * - numba_gil_ensure / numba_gil_release: the cfunc wrapper takes the GIL to report an error.
 * - numba_do_raise, numba_runtime_build_excinfo_struct, numba_unpickle: the exception paths.
 *   numba builds the exception from its pickled description; here any of them sets
 *   `fbgpu_kernel_error`, which the caller checks after the call and raises as a Python error,
 *   and sets a RuntimeError for the wrapper's PyErr_WriteUnraisable to print.
 *
 * CPython's symbols resolve against the interpreter that loads the library. The experiment
 * that measured this route first is benchmarks/experiments/aot_kernels.py.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

typedef void (*dtor_function)(void *data, size_t size, void *info);

typedef struct {
    size_t refct;
    dtor_function dtor;
    void *dtor_info;
    void *data;
    size_t size;
    void *external_allocator;
} MemInfo;

typedef struct _object PyObject;
extern int PyGILState_Ensure(void);
extern void PyGILState_Release(int);
extern void PyErr_SetString(PyObject *, const char *);
extern PyObject *PyExc_RuntimeError;

volatile int fbgpu_kernel_error = 0;

MemInfo *NRT_MemInfo_alloc_aligned(size_t size, unsigned align) {
    char *base = (char *)malloc(sizeof(MemInfo) + size + 2 * (size_t)align);
    if (base == NULL) {
        fbgpu_kernel_error = 1;
        return NULL;
    }
    MemInfo *mi = (MemInfo *)base;
    uintptr_t p = (uintptr_t)(base + sizeof(MemInfo));
    uintptr_t rem = align ? p % align : 0;
    mi->refct = 1;
    mi->dtor = NULL;
    mi->dtor_info = NULL;
    mi->data = (void *)(rem ? p + (align - rem) : p);
    mi->size = size;
    mi->external_allocator = NULL;
    return mi;
}

void NRT_MemInfo_call_dtor(MemInfo *mi) {
    if (mi->dtor) mi->dtor(mi->data, mi->size, mi->dtor_info);
    free(mi);
}

void NRT_Free(void *ptr) { free(ptr); }

void *NRT_Allocate(size_t size) {
    void *p = malloc(size ? size : 1);
    if (p == NULL) fbgpu_kernel_error = 1;
    return p;
}

static void varsize_dtor(void *data, size_t size, void *info) {
    (void)size;
    if (info) ((void (*)(void *))info)(data);
    free(data);
}

MemInfo *NRT_MemInfo_new_varsize_dtor(size_t size, dtor_function element_dtor) {
    MemInfo *mi = (MemInfo *)malloc(sizeof(MemInfo));
    void *data = NRT_Allocate(size);
    if (mi == NULL || data == NULL) {
        free(mi);
        free(data);
        fbgpu_kernel_error = 1;
        return NULL;
    }
    mi->refct = 1;
    mi->dtor = varsize_dtor;
    mi->dtor_info = (void *)element_dtor;
    mi->data = data;
    mi->size = size;
    mi->external_allocator = NULL;
    return mi;
}

void *NRT_MemInfo_varsize_alloc(MemInfo *mi, size_t size) {
    mi->data = NRT_Allocate(size);
    if (mi->data == NULL) return NULL;
    mi->size = size;
    return mi->data;
}

void *NRT_MemInfo_varsize_realloc(MemInfo *mi, size_t size) {
    void *p = realloc(mi->data, size ? size : 1);
    if (p == NULL) {
        fbgpu_kernel_error = 1;
        return NULL;
    }
    mi->data = p;
    mi->size = size;
    return p;
}

void NRT_MemInfo_varsize_free(MemInfo *mi, void *ptr) {
    free(ptr);
    if (ptr == mi->data) mi->data = NULL;
}

int numba_attempt_nocopy_reshape(intptr_t nd, const intptr_t *dims, const intptr_t *strides,
                                 intptr_t newnd, const intptr_t *newdims, intptr_t *newstrides,
                                 intptr_t itemsize, int is_f_order) {
    intptr_t old_size = 1, new_size = 1, expect = itemsize;
    for (intptr_t i = 0; i < nd; i++) old_size *= dims[i];
    for (intptr_t i = 0; i < newnd; i++) new_size *= newdims[i];
    if (old_size != new_size) return 0;
    if (new_size == 0) { /* numba's nocopy_empty_reshape */
        for (intptr_t i = 0; i < newnd; i++) newstrides[i] = itemsize;
        return 1;
    }
    if (is_f_order) return 0;
    /* C-contiguous (axes of length 1 do not matter)? */
    for (intptr_t i = nd - 1; i >= 0; i--) {
        if (dims[i] == 1) continue;
        if (strides[i] != expect) return 0;
        expect *= dims[i];
    }
    expect = itemsize;
    for (intptr_t i = newnd - 1; i >= 0; i--) {
        newstrides[i] = expect;
        expect *= newdims[i];
    }
    return 1;
}

void numba_gil_ensure(int *state) { *state = PyGILState_Ensure(); }

void numba_gil_release(int *state) { PyGILState_Release(*state); }

static void raised(void) {
    fbgpu_kernel_error = 1;
    PyErr_SetString(PyExc_RuntimeError, "fbgpu: an ahead-of-time compiled kernel raised");
}

int numba_do_raise(PyObject *exc_packed) {
    (void)exc_packed;
    raised();
    return 0;
}

PyObject *numba_runtime_build_excinfo_struct(PyObject *struct_gv, PyObject *exc_args) {
    (void)struct_gv;
    (void)exc_args;
    raised();
    return NULL;
}

PyObject *numba_unpickle(const char *data, int n, const char *hashed) {
    (void)data;
    (void)n;
    (void)hashed;
    raised();
    return NULL;
}
