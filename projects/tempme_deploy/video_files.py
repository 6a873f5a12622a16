"""Which files are videos: the project's one list of extensions (standard library only)."""

#: Video extensions, in the order preferred when one video exists in several formats.
VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.avi', '.mov', '.m4v', '.mpg', '.mpeg',
                    '.3gp', '.3g2', '.wmv', '.flv', '.ogv', '.mts', '.m2ts')
