"""The app's Gradio layer, one module per part of the page (see ``studio.tabs.common`` and
``docs/ARCHITECTURE.md``): ``locate`` (panel above the tabs), ``describe``, ``segment``, ``review``,
``label``, ``models`` (the tabs) and ``api`` (the named API endpoints). ``app.py`` assembles them.
"""
