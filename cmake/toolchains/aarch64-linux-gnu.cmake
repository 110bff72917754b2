# arm64 (64-bit ARM) with Debian's aarch64-linux-gnu cross toolchain;
# tests run under qemu-aarch64-static. See debian-cross.cmake.
set(IC_CROSS_TRIPLET aarch64-linux-gnu)
set(IC_CROSS_PROCESSOR aarch64)
set(IC_CROSS_QEMU qemu-aarch64-static)
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
