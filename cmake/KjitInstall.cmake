# Installs the libraries (static libkjit.a and shared libkjit.so), the public headers, a CMake
# package and a pkg-config file, so that another project can
#   find_package(kjit REQUIRED)
#   target_link_libraries(app PRIVATE kjit::kjit_shared)   # or kjit::kjit (static)
# or build with `pkg-config --cflags --libs kjit` (the shared library).
include(CMakePackageConfigHelpers)

set(KJIT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/kjit)
# kjit_mpi (kjit/comm_mpi.hpp) where MPI was found: link it with kjit::kjit or kjit::kjit_shared.
set(KJIT_INSTALLED_TARGETS kjit kjit_shared)
set(KJIT_WITH_MPI OFF)
if(TARGET kjit_mpi)
  list(APPEND KJIT_INSTALLED_TARGETS kjit_mpi)
  set(KJIT_WITH_MPI ON)
endif()
install(TARGETS ${KJIT_INSTALLED_TARGETS} EXPORT kjitTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/runtime/include/kjit
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT kjitTargets NAMESPACE kjit:: DESTINATION ${KJIT_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/kjitConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/kjitConfig.cmake
                              INSTALL_DESTINATION ${KJIT_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/kjitConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/kjitConfig.cmake ${PROJECT_BINARY_DIR}/kjitConfigVersion.cmake
        DESTINATION ${KJIT_CMAKE_DIR})
# Relocatable: the prefix is found from the .pc file's own folder.
file(RELATIVE_PATH KJIT_PC_TO_PREFIX "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
configure_file(${PROJECT_SOURCE_DIR}/cmake/kjit.pc.in ${PROJECT_BINARY_DIR}/kjit.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/kjit.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
