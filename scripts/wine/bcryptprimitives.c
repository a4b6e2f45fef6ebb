/* The test bed's stand-in for bcryptprimitives.dll (scripts/test-windows.sh builds it with
 * mingw-w64 into the Wine prefix under target/; it is never shipped).
 *
 * Rust std >= 1.78 imports ProcessPrng from bcryptprimitives.dll for its random numbers
 * (HashMap keys). Windows 10/11 have it; Wine gained it only in 8.13, and Debian 12 has
 * Wine 8.0, where every Rust program exits at load with "bcryptprimitives.dll not found".
 * ProcessPrng fills the buffer from the system CSPRNG and cannot fail; RtlGenRandom
 * (SystemFunction036, advapi32) is the same generator, so forward to it in chunks that fit
 * its ULONG length. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID, ULONG);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk)) return FALSE;
        data += chunk; len -= chunk;
    }
    return TRUE;
}
