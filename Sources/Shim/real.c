// libc's definitions of the interposed functions, each found on first use (shim.h, get_NAME).
#include "shim.h"

#define SHIM_DEFINE_REAL(name, ret, ...) ret (*real_##name)(__VA_ARGS__);
SHIM_REAL_FUNCTIONS(SHIM_DEFINE_REAL)
