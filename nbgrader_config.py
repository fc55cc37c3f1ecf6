"""nbgrader configuration for the saliencylab course (found from the course root)."""
c = get_config()  # noqa: F821  (injected by traitlets)

c.CourseDirectory.course_id = "saliencylab"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
c.CourseDirectory.db_url = "sqlite:///gradebook.db"

# Seconds a single cell may run while nbgrader executes a notebook (autograde, validate).
# Every lesson runs in under 60 s in total on a 2-core CPU; a student's infinite loop is
# stopped here and the rest of the notebook is still graded.
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True
# nbgrader waits only 4 s for a cell's output messages by default; a loaded machine needs more.
c.Execute.iopub_timeout = 30

# Files beside the notebook that are copied into the release.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback"]
