"""A small synthetic NTU RGB+D dataset, written in the real `.skeleton` text format.

Modules: `motion` (the actions' body motions), `ntu_files` (performances seen by NTU's three
cameras, written as .skeleton files), `render` (figures drawn as RGB video and depth maps),
`fusion` (the fusion set).

Each action id 1..12 gets a motion plausible for its official NTU name (drink water: a hand
to the mouth and back; clapping: hands meeting in front of the chest; sitting down: the pelvis
drops and moves back...). A performance (setup, subject, replication, action) is generated once
and seen by every camera, as in NTU: the cameras stand at -45 (C002), 0 (C001) and +45 (C003)
degrees, and the performer faces camera 2 in R001 and camera 3 in R002, so camera 1 sees
45-degree views and cameras 2 and 3 see front and side views. Subjects differ in size, speed
and style; files carry joint jitter, glitches, occasional short noise bodies and empty leading
frames, and pixel positions from a pinhole model of Kinect v2's 512x424 depth and 1920x1080
colour cameras.

`write_fusion_set` (`fusion.py`) adds rendered RGB videos and depth maps for a 4-class set
built to prove late fusion: one class pair only the pictures can tell apart, the other only
the skeleton.
"""

from skelact.data.synthetic.fusion import FUSION_CLASSES, write_fusion_set
from skelact.data.synthetic.ntu_files import write_synthetic_ntu

__all__ = ["FUSION_CLASSES", "write_fusion_set", "write_synthetic_ntu"]
