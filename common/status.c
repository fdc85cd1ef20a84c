/* status.c: cel_strerror() and cel_errname(), generated from CEL_ERRNO_MAP. */
#include "celeriac/celeriac.h"

const char *cel_strerror(int err)
{
    switch (err) {
    case CEL_OK:
        return "success";
#define CEL__ERRNO_STR(name, code, str)                                                            \
    case CEL_##name:                                                                               \
        return str;
        CEL_ERRNO_MAP(CEL__ERRNO_STR)
#undef CEL__ERRNO_STR
    }
    return "unknown error";
}

const char *cel_errname(int err)
{
    switch (err) {
    case CEL_OK:
        return "CEL_OK";
#define CEL__ERRNO_NAME(name, code, str)                                                           \
    case CEL_##name:                                                                               \
        return "CEL_" #name;
        CEL_ERRNO_MAP(CEL__ERRNO_NAME)
#undef CEL__ERRNO_NAME
    }
    return NULL;
}
