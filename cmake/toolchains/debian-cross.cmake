# Cross-building on Debian with its cross toolchains and multiarch packages
# (dpkg --add-architecture ARCH; crossbuild-essential-ARCH; the -dev:ARCH
# packages). Included by the per-target files of this folder, which set
# IC_CROSS_TRIPLET, IC_CROSS_PROCESSOR and IC_CROSS_QEMU first.
#
# The target's libraries live beside the build machine's in
# /usr/lib/<triplet> (their CMake packages in /usr/lib/<triplet>/cmake, their
# pkg-config files in /usr/lib/<triplet>/pkgconfig); headers are shared in
# /usr/include, with the architecture's own in /usr/include/<triplet>.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${IC_CROSS_PROCESSOR})
set(CMAKE_LIBRARY_ARCHITECTURE ${IC_CROSS_TRIPLET})

set(CMAKE_C_COMPILER ${IC_CROSS_TRIPLET}-gcc)
set(CMAKE_AR ${IC_CROSS_TRIPLET}-ar CACHE FILEPATH "")
set(CMAKE_RANLIB ${IC_CROSS_TRIPLET}-ranlib CACHE FILEPATH "")
set(CMAKE_STRIP ${IC_CROSS_TRIPLET}-strip CACHE FILEPATH "")

# Libraries, headers and CMake packages are looked up under these roots only
# (the toolchain's own /usr/<triplet>, and the multiarch tree under /); with
# CMAKE_LIBRARY_ARCHITECTURE set, a package is found in lib/<triplet>/cmake,
# never the build machine's copy in lib/<its triplet>/cmake. Programs are the
# build machine's.
set(CMAKE_FIND_ROOT_PATH /usr/${IC_CROSS_TRIPLET} /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config answers for the target: pkgconf's <triplet>-pkg-config when it
# is there, and in any case only the target's .pc files.
find_program(IC_CROSS_PKG_CONFIG ${IC_CROSS_TRIPLET}-pkg-config)
if(IC_CROSS_PKG_CONFIG)
  set(PKG_CONFIG_EXECUTABLE ${IC_CROSS_PKG_CONFIG} CACHE FILEPATH "")
endif()
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${IC_CROSS_TRIPLET}/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
unset(ENV{PKG_CONFIG_SYSROOT_DIR})

# Test programs run under qemu-user (qemu-user-static). The target's dynamic
# loader and libraries are the multiarch ones (libc6:ARCH), found at their
# usual paths, so no -L prefix is needed.
find_program(IC_CROSS_EMULATOR ${IC_CROSS_QEMU})
if(IC_CROSS_EMULATOR)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${IC_CROSS_EMULATOR})
endif()
