"""Video -> skeleton with MediaPipe PoseLandmarker: model bundle, extraction, batch conversion."""

from skelact.pose.convert import ConvertError, collect_videos, convert_videos
from skelact.pose.extract import PoseExtractionError, Tracker, convert_layout, extract_video
from skelact.pose.model import PoseModelError, build_offline_bundle, ensure_pose_model

__all__ = [
    "ConvertError",
    "PoseExtractionError",
    "PoseModelError",
    "Tracker",
    "build_offline_bundle",
    "collect_videos",
    "convert_layout",
    "convert_videos",
    "ensure_pose_model",
    "extract_video",
]
