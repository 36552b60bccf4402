/* kjit._native: the Python package's calls into libkjit.so's C ABI, in C so that a call costs
   about what the C++ call does (docs/perf.md, issue 18: through ctypes, describing a tensor and
   converting the arguments cost 1-2 us each on the GPU machine).

   - Tensors reach kjit as DLTensors filled by torch itself through DLPack's C exchange table
     (torch.Tensor.__dlpack_c_exchange_api__, DLPack 1.3), on this call's stack: no export object,
     no capsule. Anything the table does not take (a meta tensor, the CPU tests' stand-ins) goes
     to the package's Python description (kjit._dlpack.DLArgs), so kjit still names it.
   - An entry point is called through libffi (what ctypes uses) from a signature written once as
     a string of argument kinds (kjit._library), so this file knows no entry point.
   - direct() is the eager path's check that torch's dispatcher would only pass a call through
     (kjit._launch.Op), cheaper than its Python form.

   Built by `pip install ./python` against the limited API (one binary for CPython >= 3.11). */
#define Py_LIMITED_API 0x030B0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlpack/dlpack.h>
#include <ffi.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* DLPack 1.3's exchange table (DLPack >= 1.3's dlpack.h; the system's may be older, with the same
   DLTensor). Only `describe` is used: outputs are allocated by torch in Python, since a tensor
   made by the table's allocator is a DLPack import, whose storage torch's caching allocator does
   not own (record_stream would be ignored on it). */
typedef struct {
  struct {
    uint32_t major, minor;
  } version;
  void* prev_api;
  void* allocate;
  void* managed_from_object;
  void* managed_to_object;
  int (*describe)(void* py_object, DLTensor* out); /* may be NULL */
  void* current_stream;
} ExchangeApi;

enum { kMaxArgs = 24 };

/* What bind() was given: the table, torch.Tensor, the Python description of what the table does
   not take (a DLArgs factory) and kjit's InvalidArgumentError. */
static const ExchangeApi* exchange;
static PyTypeObject* tensor_type;
static PyObject* python_describer;
static PyObject* invalid_argument;
static PyObject *requires_grad_name, *is_cuda_name;

/* One entry point: its address, its argument kinds and the ffi call description built from them.
   Kinds: 't' const DLTensor* (a tensor, a DLTensor's int address, or None: NULL), 'p' a pointer
   (None, an int address, or an object with a buffer: bytes, a ctypes instance), 'i' int32, 'l'
   int64, 'z' size_t, 'f' float. The return is 'i' (kjit_status) or 'l' (int64). */
typedef struct {
  void (*function)(void);
  ffi_cif cif;
  ffi_type* types[kMaxArgs];
  char kinds[kMaxArgs + 1];
  char result;
  char name[64];
} Entry;

static ffi_type* ffi_type_of(char kind) {
  switch (kind) {
    case 't':
    case 'p':
      return &ffi_type_pointer;
    case 'i':
      return &ffi_type_sint32;
    case 'l':
      return &ffi_type_sint64;
    case 'z':
      return sizeof(size_t) == 8 ? &ffi_type_uint64 : &ffi_type_uint32;
    case 'f':
      return &ffi_type_float;
    default:
      return NULL;
  }
}

static void entry_free(PyObject* capsule) {
  PyMem_Free(PyCapsule_GetPointer(capsule, "kjit.entry"));
}

/* entry(address, result_kind, argument_kinds, name) -> an opaque entry for call(). */
static PyObject* entry(PyObject* self, PyObject* args) {
  (void)self;
  PyObject* address;
  const char *result, *kinds, *name;
  if (!PyArg_ParseTuple(args, "Osss", &address, &result, &kinds, &name)) return NULL;
  const size_t count = strlen(kinds);
  if (count > kMaxArgs || strlen(result) != 1 || strchr("il", result[0]) == NULL) {
    return PyErr_Format(PyExc_ValueError, "%s: unsupported signature %s(%s)", name, result, kinds);
  }
  Entry* e = PyMem_Calloc(1, sizeof(Entry));
  if (e == NULL) return PyErr_NoMemory();
  e->function = (void (*)(void))PyLong_AsVoidPtr(address);
  int bad_kind = 0;
  for (size_t i = 0; i < count; ++i) {
    e->types[i] = ffi_type_of(kinds[i]);
    bad_kind |= e->types[i] == NULL;
  }
  memcpy(e->kinds, kinds, count);
  e->result = result[0];
  snprintf(e->name, sizeof e->name, "%s", name);
  if (PyErr_Occurred() || e->function == NULL || bad_kind ||
      ffi_prep_cif(&e->cif, FFI_DEFAULT_ABI, (unsigned)count,
                   e->result == 'l' ? &ffi_type_sint64 : &ffi_type_sint32, e->types) != FFI_OK) {
    PyMem_Free(e);
    if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s: bad entry (%s)", name, kinds);
    return NULL;
  }
  PyObject* capsule = PyCapsule_New(e, "kjit.entry", entry_free);
  if (capsule == NULL) PyMem_Free(e);
  return capsule;
}

/* One argument's storage for the call. Errors count arguments from 1, as ctypes' do. */
typedef union {
  void* p;
  int32_t i;
  int64_t l;
  size_t z;
  float f;
} Slot;

static int refuse(const Entry* e, Py_ssize_t index, const char* expected, PyObject* got) {
  PyObject* type = PyType_GetName(Py_TYPE(got));
  if (type != NULL) {
    PyErr_Format(invalid_argument, "%s: argument %zd must be %s, got %U", e->name, index + 1,
                 expected, type);
    Py_DECREF(type);
  }
  return -1;
}

/* A tensor argument as a DLTensor*: through torch's table where it takes it, else through the
   Python description (created once a call, in *describer; its DLTensors live as long as it). */
static int tensor_arg(const Entry* e, Py_ssize_t index, PyObject* arg, DLTensor* tensor,
                      PyObject** describer, void** out) {
  if (arg == Py_None) {
    *out = NULL;
    return 0;
  }
  if (PyLong_Check(arg)) { /* a DLTensor described already (kjit._dlpack.DLArgs) */
    *out = PyLong_AsVoidPtr(arg);
    return PyErr_Occurred() ? -1 : 0;
  }
  if (PyObject_TypeCheck(arg, tensor_type) && exchange->describe(arg, tensor) == 0) {
    *out = tensor;
    return 0;
  }
  PyErr_Clear(); /* what the table refused (a meta tensor) is described in Python */
  if (*describer == NULL && (*describer = PyObject_CallNoArgs(python_describer)) == NULL) return -1;
  PyObject* name = PyUnicode_FromFormat("%s argument %zd", e->name, index + 1);
  if (name == NULL) return -1;
  PyObject* address = PyObject_CallFunctionObjArgs(*describer, arg, name, NULL);
  Py_DECREF(name);
  if (address == NULL) return -1;
  *out = address == Py_None ? NULL : PyLong_AsVoidPtr(address);
  Py_DECREF(address);
  return PyErr_Occurred() ? -1 : 0;
}

/* call(entry, *args) -> the entry point's result (kjit_status, or its int64). */
static PyObject* call(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  (void)self;
  if (nargs < 1) return PyErr_Format(PyExc_TypeError, "call(entry, *args)");
  const Entry* e = PyCapsule_GetPointer(args[0], "kjit.entry");
  if (e == NULL) return NULL;
  const Py_ssize_t count = (Py_ssize_t)strlen(e->kinds);
  if (nargs - 1 != count) {
    return PyErr_Format(invalid_argument, "%s takes %zd arguments, got %zd", e->name, count,
                        nargs - 1);
  }
  Slot slots[kMaxArgs];
  void* values[kMaxArgs];
  DLTensor tensors[kMaxArgs];
  Py_buffer buffers[kMaxArgs];
  int buffered[kMaxArgs] = {0};
  PyObject* describer = NULL;
  PyObject* result = NULL;
  Py_ssize_t i = 0;
  for (; i < count; ++i) {
    PyObject* arg = args[i + 1];
    Slot* slot = &slots[i];
    values[i] = slot;
    switch (e->kinds[i]) {
      case 't':
        if (tensor_arg(e, i, arg, &tensors[i], &describer, &slot->p) != 0) goto done;
        break;
      case 'p':
        if (arg == Py_None) {
          slot->p = NULL;
        } else if (PyLong_Check(arg)) {
          slot->p = PyLong_AsVoidPtr(arg);
        } else if (PyObject_CheckBuffer(arg) &&
                   PyObject_GetBuffer(arg, &buffers[i], PyBUF_SIMPLE) == 0) {
          buffered[i] = 1;
          slot->p = buffers[i].buf;
        } else {
          PyErr_Clear();
          refuse(e, i, "an address, None or a buffer", arg);
          goto done;
        }
        break;
      case 'i':
      case 'l':
      case 'z': {
        if (!PyLong_Check(arg)) {
          refuse(e, i, "an int", arg);
          goto done;
        }
        const long long value = PyLong_AsLongLong(arg);
        if (value == -1 && PyErr_Occurred()) goto done;
        if ((e->kinds[i] == 'i' && (value < INT32_MIN || value > INT32_MAX)) ||
            (e->kinds[i] == 'z' && value < 0)) {
          PyErr_Format(invalid_argument, "%s: argument %zd is out of range (%lld)", e->name, i + 1,
                       value);
          goto done;
        }
        if (e->kinds[i] == 'i') slot->i = (int32_t)value;
        if (e->kinds[i] == 'l') slot->l = value;
        if (e->kinds[i] == 'z') slot->z = (size_t)value;
        break;
      }
      case 'f': {
        if (!PyFloat_Check(arg) && !PyLong_Check(arg)) {
          refuse(e, i, "a float", arg);
          goto done;
        }
        const double value = PyFloat_AsDouble(arg);
        if (value == -1.0 && PyErr_Occurred()) goto done;
        slot->f = (float)value;
        break;
      }
    }
  }
  {
    int64_t returned = 0; /* libffi widens a narrower result to a full register (ffi_arg) */
    ffi_call((ffi_cif*)&e->cif, e->function, &returned, values);
    result = PyLong_FromLongLong(e->result == 'l' ? returned : (int32_t)returned);
  }
done:
  for (Py_ssize_t b = 0; b < i; ++b) {
    if (buffered[b]) PyBuffer_Release(&buffers[b]);
  }
  Py_XDECREF(describer);
  return result;
}

/* Whether `answer` (a torch query's) is None or false; -1 on an error. */
static int is_quiet(PyObject* answer) {
  if (answer == NULL) return -1;
  const int quiet = answer == Py_None ? 1 : !PyObject_IsTrue(answer);
  Py_DECREF(answer);
  return quiet;
}

/* A tensor argument of direct(): 1 where it allows the direct path, 0 where not, -1 on error. */
static int direct_tensor(PyObject* t, int grad, PyObject** anchor) {
  if (Py_TYPE(t) != tensor_type) return 0; /* a subclass (fake, functional, Parameter) dispatches */
  if (grad) {
    const int requires = is_quiet(PyObject_GetAttr(t, requires_grad_name));
    if (requires <= 0) return requires;
  }
  if (*anchor == NULL) *anchor = t;
  return 1;
}

/* direct(queries, grad_enabled, args) -> bool: kjit._launch.direct's checks past
   torch.compiler.is_compiling(): every one of `queries` (torch's, called without arguments)
   answers None or a false value, and `args` are as direct_tensor() allows, one of them on CUDA. */
static PyObject* direct(PyObject* self, PyObject* const* argv, Py_ssize_t nargs) {
  (void)self;
  if (nargs != 3 || !PyTuple_Check(argv[0]) || !PyTuple_Check(argv[2])) {
    return PyErr_Format(PyExc_TypeError, "direct(queries, grad_enabled, args)");
  }
  const Py_ssize_t queries = PyTuple_Size(argv[0]);
  for (Py_ssize_t q = 0; q < queries; ++q) {
    const int quiet = is_quiet(PyObject_CallNoArgs(PyTuple_GetItem(argv[0], q)));
    if (quiet <= 0) return quiet < 0 ? NULL : Py_NewRef(Py_False);
  }
  PyObject* grad_answer = PyObject_CallNoArgs(argv[1]);
  if (grad_answer == NULL) return NULL;
  const int grad = PyObject_IsTrue(grad_answer);
  Py_DECREF(grad_answer);
  PyObject* anchor = NULL;
  PyObject* args = argv[2];
  const Py_ssize_t count = PyTuple_Size(args);
  for (Py_ssize_t a = 0; a < count; ++a) {
    PyObject* arg = PyTuple_GetItem(args, a);
    if (PyList_Check(arg) || PyTuple_Check(arg)) {
      const Py_ssize_t n = PySequence_Size(arg);
      for (Py_ssize_t j = 0; j < n; ++j) {
        PyObject* item = PySequence_GetItem(arg, j);
        if (item == NULL) return NULL;
        const int ok =
            PyObject_TypeCheck(item, tensor_type) ? direct_tensor(item, grad, &anchor) : 1;
        Py_DECREF(item); /* the sequence keeps it alive as the anchor */
        if (ok <= 0) return ok < 0 ? NULL : Py_NewRef(Py_False);
      }
    } else if (PyObject_TypeCheck(arg, tensor_type)) {
      const int ok = direct_tensor(arg, grad, &anchor);
      if (ok <= 0) return ok < 0 ? NULL : Py_NewRef(Py_False);
    }
  }
  if (anchor == NULL) return Py_NewRef(Py_False);
  return PyObject_GetAttr(anchor, is_cuda_name);
}

/* bind(exchange_capsule, tensor_type, describer, invalid_argument) once, before any other call. */
static PyObject* bind(PyObject* self, PyObject* args) {
  (void)self;
  PyObject *capsule, *type, *describer, *invalid;
  if (!PyArg_ParseTuple(args, "OOOO", &capsule, &type, &describer, &invalid)) return NULL;
  const ExchangeApi* api = PyCapsule_GetPointer(capsule, "dlpack_exchange_api");
  if (api == NULL) return NULL;
  if (api->version.major != 1 || api->describe == NULL || !PyType_Check(type)) {
    return PyErr_Format(PyExc_ImportError,
                        "kjit: torch's DLPack exchange table is not DLPack 1 with describe");
  }
  if (exchange != NULL) return PyErr_Format(PyExc_RuntimeError, "kjit._native: bound twice");
  exchange = api; /* the table and these objects live as long as the process */
  tensor_type = (PyTypeObject*)Py_NewRef(type);
  python_describer = Py_NewRef(describer);
  invalid_argument = Py_NewRef(invalid);
  Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS, "Binds torch's exchange table and the package's pieces."},
    {"entry", entry, METH_VARARGS, "entry(address, result_kind, argument_kinds, name)"},
    {"call", (PyCFunction)(void (*)(void))call, METH_FASTCALL, "call(entry, *args)"},
    {"direct", (PyCFunction)(void (*)(void))direct, METH_FASTCALL,
     "direct(queries, grad_enabled, args)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) {
  requires_grad_name = PyUnicode_InternFromString("requires_grad");
  is_cuda_name = PyUnicode_InternFromString("is_cuda");
  if (requires_grad_name == NULL || is_cuda_name == NULL) return NULL;
  return PyModule_Create(&module);
}
