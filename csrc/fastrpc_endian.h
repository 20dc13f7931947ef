/* Big-endian loads and stores on unaligned memory, used by the framing and
 * codec modules. memcpy keeps them legal on every architecture; compilers turn
 * each into a single load/store plus a byte swap. */
#ifndef FASTRPC_ENDIAN_H
#define FASTRPC_ENDIAN_H

#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define FRPC_BSWAP16 __builtin_bswap16
#define FRPC_BSWAP32 __builtin_bswap32
#define FRPC_BSWAP64 __builtin_bswap64
#else
static inline uint16_t FRPC_BSWAP16(uint16_t x) { return (uint16_t)((x >> 8) | (x << 8)); }
static inline uint32_t FRPC_BSWAP32(uint32_t x) {
    return ((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >> 8) & 0xff00) | (x >> 24);
}
static inline uint64_t FRPC_BSWAP64(uint64_t x) {
    return ((uint64_t)FRPC_BSWAP32((uint32_t)x) << 32) | FRPC_BSWAP32((uint32_t)(x >> 32));
}
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define FRPC_BE16(x) (x)
#define FRPC_BE32(x) (x)
#define FRPC_BE64(x) (x)
#else
#define FRPC_BE16(x) FRPC_BSWAP16(x)
#define FRPC_BE32(x) FRPC_BSWAP32(x)
#define FRPC_BE64(x) FRPC_BSWAP64(x)
#endif

static inline uint16_t frpc_load_u16(const char *p) { uint16_t v; memcpy(&v, p, 2); return FRPC_BE16(v); }
static inline uint32_t frpc_load_u32(const char *p) { uint32_t v; memcpy(&v, p, 4); return FRPC_BE32(v); }
static inline uint64_t frpc_load_u64(const char *p) { uint64_t v; memcpy(&v, p, 8); return FRPC_BE64(v); }
static inline float frpc_load_f32(const char *p) {
    uint32_t v = frpc_load_u32(p); float f; memcpy(&f, &v, 4); return f;
}
static inline double frpc_load_f64(const char *p) {
    uint64_t v = frpc_load_u64(p); double d; memcpy(&d, &v, 8); return d;
}

static inline void frpc_store_u16(char *p, uint16_t v) { v = FRPC_BE16(v); memcpy(p, &v, 2); }
static inline void frpc_store_u32(char *p, uint32_t v) { v = FRPC_BE32(v); memcpy(p, &v, 4); }
static inline void frpc_store_u64(char *p, uint64_t v) { v = FRPC_BE64(v); memcpy(p, &v, 8); }
static inline void frpc_store_f64(char *p, double d) { uint64_t v; memcpy(&v, &d, 8); frpc_store_u64(p, v); }

#endif
