/* Preloaded by `edgepack isa-mask`: CPUID answers with the features in $EDGEPACK_CPUID_MASK cleared.
 *
 * The constructor turns on CPUID faulting for the process (arch_prctl ARCH_SET_CPUID 0; threads and forks inherit
 * it, exec clears it and the preload sets it again), so every CPUID raises SIGSEGV; the handler runs the real
 * CPUID with faulting briefly off, clears the masked bits and steps over the instruction. Any other SIGSEGV goes to
 * the handler the program installed (sigaction and signal are wrapped so a later handler, such as Python's
 * faulthandler, is chained behind this one instead of replacing it), or to the default action.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

struct cleared { uint32_t leaf, subleaf, reg, bits; };

static struct cleared masks[64];
static int n_masks;
static int installed;
static struct sigaction program_handler;
static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);

static long set_cpuid(unsigned long enabled) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled); }

static void resolve(void) {
    if (!real_sigaction)
        real_sigaction = (int (*)(int, const struct sigaction *, struct sigaction *))dlsym(RTLD_NEXT, "sigaction");
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    greg_t *regs = ((ucontext_t *)context)->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)regs[REG_RIP];
    if (info->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0xa2) { /* cpuid */
        uint32_t out[4], leaf = (uint32_t)regs[REG_RAX], subleaf = (uint32_t)regs[REG_RCX];
        set_cpuid(1);
        __cpuid_count(leaf, subleaf, out[0], out[1], out[2], out[3]);
        set_cpuid(0);
        for (int i = 0; i < n_masks; i++)
            if (masks[i].leaf == leaf && masks[i].subleaf == subleaf) out[masks[i].reg] &= ~masks[i].bits;
        regs[REG_RAX] = out[0];
        regs[REG_RBX] = out[1];
        regs[REG_RCX] = out[2];
        regs[REG_RDX] = out[3];
        regs[REG_RIP] += 2;
        return;
    }
    if (program_handler.sa_flags & SA_SIGINFO) {
        program_handler.sa_sigaction(sig, info, context);
        return;
    }
    if (program_handler.sa_handler != SIG_DFL && program_handler.sa_handler != SIG_IGN) {
        program_handler.sa_handler(sig);
        return;
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    real_sigaction(SIGSEGV, &dfl, NULL);
    raise(sig); /* blocked until this handler returns, then the default action: as without the mask */
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    resolve();
    if (sig != SIGSEGV || !installed) return real_sigaction(sig, act, old);
    if (old) *old = program_handler;
    if (act) program_handler = *act;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    if (sigaction(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
}

__attribute__((constructor)) static void start(void) {
    const char *spec = getenv("EDGEPACK_CPUID_MASK");
    if (!spec || !*spec) return;
    resolve();
    while (*spec) {
        struct cleared m;
        int used = 0;
        if (n_masks == 64 || sscanf(spec, "%u:%u:%u:%x%n", &m.leaf, &m.subleaf, &m.reg, &m.bits, &used) != 4
            || m.reg > 3) {
            fprintf(stderr, "edgepack isa-mask: EDGEPACK_CPUID_MASK: cannot read '%s'\n", spec);
            _exit(2);
        }
        masks[n_masks++] = m;
        spec += used;
        if (*spec == ',') spec++;
    }
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_sigaction = on_segv;
    act.sa_flags = SA_SIGINFO;
    sigemptyset(&act.sa_mask);
    real_sigaction(SIGSEGV, &act, &program_handler);
    installed = 1;
    if (set_cpuid(0) != 0) {
        fprintf(stderr, "edgepack isa-mask: this CPU or kernel cannot trap CPUID (arch_prctl ARCH_SET_CPUID)\n");
        _exit(2);
    }
}
