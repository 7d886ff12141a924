"""Long videos: a driving clip of any length sampled in chunks (``plan``), each chunk's colour kept on the
portrait's (``colour``), its frames written as they are made (``segments``) and kept on disk so a stopped run
resumes (``store``)."""
