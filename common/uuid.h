/* uuid.h: random (version 4) UUIDs for task ids. */
#ifndef CEL_COMMON_UUID_H
#define CEL_COMMON_UUID_H

/* Writes a lowercase uuid4 string ("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx") and a NUL to out. */
void cel_uuid4(char out[37]);

#endif
