/* profile_load: meter profiles read from YAML.
 *
 * A profile file (drivers/profiles/NAME.yaml for the built-ins, or any path a
 * site names) is parsed with the YAML document model (ydoc.h) and checked
 * completely into the model of profile.h; every error names FILE:LINE:COL.
 * File format: see docs/profiles.md.
 */
#ifndef IC_PROFILE_LOAD_H
#define IC_PROFILE_LOAD_H

#include <stddef.h>

#include "profile/profile.h"

/* Load a profile. REF is a built-in name ([A-Za-z0-9_-]+, looked up in
 * PROFILE_DIR, or profile_builtin_dir() when it is NULL) or a path to a
 * YAML file (anything containing '/' or ending in .yaml/.yml), relative paths
 * resolved against BASE_DIR. On failure returns NULL with a positioned error
 * ("FILE:LINE:COL: message") in err. Free it with profile_free. */
mb_profile *profile_load(const char *ref, const char *base_dir,
                         const char *profile_dir, char *err, size_t errlen);

/* Parse a profile from memory (NAME is used in messages). */
mb_profile *profile_load_string(const char *name, const char *text, size_t len,
                                char *err, size_t errlen);

/* The directory of the built-in profiles: share/intake-collector/profiles
 * beside an installed program (found from /proc/self/exe), otherwise the
 * compiled-in source tree's drivers/profiles. */
const char *profile_builtin_dir(void);

#endif
