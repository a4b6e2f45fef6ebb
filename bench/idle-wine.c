/* bench/idle-wine's yardstick: a Windows program that does nothing but block (on an event
 * nobody sets), so what it costs under Wine is Wine's own idle cost. */
#include <windows.h>

int main(void)
{
    HANDLE never = CreateEventW(NULL, TRUE, FALSE, NULL);
    WaitForSingleObject(never, INFINITE);
    return 0;
}
