# The libraries Perennial links, found the same way by its own build (top-level CMakeLists.txt)
# and by a program that uses the installed package (PerennialConfig.cmake includes this file).
#
# Dependencies whose find modules give variables instead of imported targets (LibTorch's
# TORCH_LIBRARIES, HDF5's, libcsv, NCCL) are wrapped in imported interface targets named
# perennial_dep::*. The exported targets name only these, never a path found on the machine that
# built Perennial, so the installed package links whatever the user's own find_package(Torch) etc.
# find.
#
# Inputs: PERENNIAL_HAVE_NCCL (1: the NCCL communicator is built, so CUDA and NCCL are needed).
# From PerennialConfig.cmake only: PERENNIAL_FROM_PACKAGE_CONFIG (TRUE), PERENNIAL_TORCH_VERSION
# (the LibTorch Perennial was compiled against, required exactly: LibTorch keeps no ABI between
# versions) and PERENNIAL_TORCH_HINT (where it was: searched after the user's Torch_DIR and
# CMAKE_PREFIX_PATH, for a LibTorch outside the default prefixes such as a CUDA PyTorch's).

# find_package(... REQUIRED) in Perennial's build; find_dependency() from PerennialConfig.cmake,
# which makes find_package(Perennial) fail with the missing dependency's name instead.
macro(perennial_find_dependency)
  if(PERENNIAL_FROM_PACKAGE_CONFIG)
    find_dependency(${ARGV})
  else()
    find_package(${ARGV} REQUIRED)
  endif()
endmacro()
# A library found without a package: the same two behaviours (return() leaves this file).
macro(perennial_dependency_missing message)
  if(PERENNIAL_FROM_PACKAGE_CONFIG)
    set(Perennial_NOT_FOUND_MESSAGE "${message}")
    set(Perennial_FOUND FALSE)
    return()
  endif()
  message(FATAL_ERROR "${message}")
endmacro()

if(PERENNIAL_TORCH_VERSION)
  perennial_find_dependency(Torch ${PERENNIAL_TORCH_VERSION} EXACT HINTS "${PERENNIAL_TORCH_HINT}")
else()
  perennial_find_dependency(Torch)
endif()
perennial_find_dependency(MPI COMPONENTS C)
perennial_find_dependency(HDF5 COMPONENTS C)
perennial_find_dependency(Boost 1.71 COMPONENTS program_options)
perennial_find_dependency(nlohmann_json 3.10)
perennial_find_dependency(spdlog)
perennial_find_dependency(OpenSSL COMPONENTS Crypto)
perennial_find_dependency(ZLIB)
perennial_find_dependency(Threads)
perennial_find_dependency(SQLite3)
perennial_find_dependency(PkgConfig)
# cpp-httplib (the scheduler's metrics endpoint): Debian builds it as a library; its pkg-config
# file carries the feature macros it was built with, which the header's declarations must see.
if(NOT TARGET PkgConfig::HTTPLIB)
  pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
endif()
find_library(PERENNIAL_CSV_LIBRARY csv)  # libcsv (Debian libcsv-dev): data import-csv
if(NOT PERENNIAL_CSV_LIBRARY)
  perennial_dependency_missing("libcsv not found (Debian: libcsv-dev)")
endif()
if(PERENNIAL_HAVE_NCCL)
  perennial_find_dependency(CUDAToolkit)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
  if(NOT NCCL_INCLUDE_DIR OR NOT NCCL_LIBRARY)
    perennial_dependency_missing("NCCL not found (Perennial was built with its NCCL communicator): set NCCL_INCLUDE_DIR and NCCL_LIBRARY")
  endif()
endif()

# LibTorch: its config defines the imported target `torch` but links c10 (and more in some
# builds) only through TORCH_LIBRARIES, as file paths.
if(NOT TARGET perennial_dep::torch)
  add_library(perennial_dep::torch INTERFACE IMPORTED)
  set_target_properties(perennial_dep::torch PROPERTIES INTERFACE_LINK_LIBRARIES "${TORCH_LIBRARIES}")
  # LibTorch 2.14 and later refuse C++17 (ATen/ATen.h: "#error C++20 or later compatible compiler
  # is required"): whatever includes those headers is then compiled as C++20, the rest as C++17.
  foreach(_perennial_dir IN LISTS TORCH_INCLUDE_DIRS)
    if(EXISTS "${_perennial_dir}/ATen/ATen.h")
      file(STRINGS "${_perennial_dir}/ATen/ATen.h" _perennial_cxx20 REGEX "__cplusplus < 202002L")
      if(_perennial_cxx20)
        set_property(TARGET perennial_dep::torch PROPERTY INTERFACE_COMPILE_FEATURES cxx_std_20)
      endif()
      break()
    endif()
  endforeach()
endif()
# HDF5's find module has an imported target only from CMake 3.19; its variables work everywhere.
if(NOT TARGET perennial_dep::hdf5)
  add_library(perennial_dep::hdf5 INTERFACE IMPORTED)
  set_target_properties(perennial_dep::hdf5 PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${HDF5_INCLUDE_DIRS}"
    INTERFACE_LINK_LIBRARIES "${HDF5_C_LIBRARIES}")
endif()
if(NOT TARGET perennial_dep::csv)
  add_library(perennial_dep::csv INTERFACE IMPORTED)
  set_target_properties(perennial_dep::csv PROPERTIES INTERFACE_LINK_LIBRARIES "${PERENNIAL_CSV_LIBRARY}")
endif()
if(PERENNIAL_HAVE_NCCL AND NOT TARGET perennial_dep::nccl)
  add_library(perennial_dep::nccl INTERFACE IMPORTED)
  set_target_properties(perennial_dep::nccl PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "CUDA::cudart;${NCCL_LIBRARY}")
endif()
