"""The miniature world of the book: procedural shapes with captions (``shapes``), a judge that reads
them back from generated images (``judge``), and the recipe that trains mini-shapes on them
(``train``)."""
