"""Run a command on this x86 host with the runtimes' kernels chosen as an older CPU would choose them.

int8 numerics, and which of a bundle's artifacts is fastest, depend on the kernels ONNX Runtime (MLAS), XNNPACK
and oneDNN pick by CPUID. On a Linux x86-64 host whose CPU can fault on CPUID (``cpuid_fault`` in
``/proc/cpuinfo``: Intel since Ivy Bridge, KVM guests), a small preloaded library (``cpuid_mask.c``, built with
the system's C compiler on first use) answers every CPUID with a profile's features cleared, in the command and in
every process it starts. The kernels then run the same instructions they run on such a CPU, so int8 numerics are
that CPU's; timings are this core running that code, a proxy for the ranking, not that CPU's figures.

``profiles``: which features each profile clears, and whether a mask is active here (read by
``device_bench.fingerprint``, so every fingerprint, speed profile and benchmark names the masked ISA);
``launch``: the library and the environment that applies a profile; ``cli``: ``edgepack isa-mask``.
"""
